-- The latest materialisation of a selection (parameter $selection): kind, config, stats.
SELECT kind, config::VARCHAR AS config, config_hash, rows_in, round(seconds, 3) AS seconds, stats::VARCHAR AS stats
FROM stage_runs
WHERE stage = $selection
ORDER BY finished_at DESC
LIMIT 1;
