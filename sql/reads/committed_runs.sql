-- Runs of one stage (or source), config and shard recorded in stage_runs; a run waiting for
-- another's lock compares this count before and after to see whether that run committed.
-- $shard is '' for unsharded runs.
SELECT count(*)
FROM stage_runs
WHERE stage = $stage
  AND config_hash = $config_hash
  AND coalesce(json_extract_string(stats, '$.shard'), '') = $shard;
