-- Record one warm-up checkpoint (a checkpoint of the same stage, config and epoch is replaced).
-- Parameters: $stage, $config_hash, $epoch, $path, $adapter_sha256, $optimizer_sha256, $mean_lr, $now.
-- MERGE, not ON CONFLICT: the same text runs on a DuckLake, which has no PRIMARY KEY.
MERGE INTO lora_checkpoints AS t
USING (SELECT $stage AS stage, $config_hash AS config_hash, $epoch::INTEGER AS epoch) AS k
ON t.stage = k.stage AND t.config_hash = k.config_hash AND t.epoch = k.epoch
WHEN MATCHED THEN UPDATE SET path = $path, adapter_sha256 = $adapter_sha256,
    optimizer_sha256 = $optimizer_sha256, mean_lr = $mean_lr, created_at = $now
WHEN NOT MATCHED THEN INSERT (stage, config_hash, epoch, path, adapter_sha256, optimizer_sha256, mean_lr, created_at)
    VALUES (k.stage, k.config_hash, k.epoch, $path, $adapter_sha256, $optimizer_sha256, $mean_lr, $now);
