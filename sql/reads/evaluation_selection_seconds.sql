-- A selection's latest run at its current config (selections are recomputed whole).
-- Parameters: $pipeline, $stage, $config_hash.
SELECT seconds
FROM stage_runs
WHERE pipeline = $pipeline AND stage = $stage AND config_hash = $config_hash
ORDER BY finished_at DESC
LIMIT 1;
