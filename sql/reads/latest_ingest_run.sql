-- The stats of a source's latest ingest at one config (to reuse an ingest a concurrent run just made).
SELECT stats
FROM stage_runs
WHERE stage = $stage AND config_hash = $config_hash AND kind = 'source'
ORDER BY finished_at DESC
LIMIT 1;
