-- The most recent materialisation of every stage, with what it computed.
SELECT stage, kind, started_at, seconds, rows_in, rows_out, config_hash
FROM (SELECT *, row_number() OVER (PARTITION BY stage ORDER BY started_at DESC) AS recency FROM stage_history)
WHERE recency = 1
ORDER BY stage;
