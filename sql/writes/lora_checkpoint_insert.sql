-- Record one warm-up checkpoint. Parameters: $stage, $config_hash, $epoch, $path, $adapter_sha256,
-- $optimizer_sha256, $mean_lr, $now.
INSERT INTO lora_checkpoints VALUES ($stage, $config_hash, $epoch, $path, $adapter_sha256, $optimizer_sha256,
                                     $mean_lr, $now)
ON CONFLICT (stage, config_hash, epoch) DO UPDATE SET path = excluded.path,
    adapter_sha256 = excluded.adapter_sha256, optimizer_sha256 = excluded.optimizer_sha256,
    mean_lr = excluded.mean_lr, created_at = excluded.created_at;
