-- Seconds spent computing a stage's current rows: every run of its current config (incremental
-- stages add rows run by run). Parameters: $pipeline, $stage, $config_hash.
SELECT coalesce(sum(seconds), 0.0) AS seconds, count(*) AS runs
FROM stage_runs
WHERE pipeline = $pipeline AND stage = $stage AND config_hash = $config_hash;
