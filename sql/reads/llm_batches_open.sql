-- Batches of this stage run (same config, shard and server) submitted but not yet downloaded.
SELECT batch_id, request_hashes
FROM llm_batches
WHERE pipeline = $pipeline AND stage = $stage AND config_hash = $config_hash AND shard = $shard
  AND base_url = $base_url AND status IN ('submitting', 'submitted')
ORDER BY submitted_at;
