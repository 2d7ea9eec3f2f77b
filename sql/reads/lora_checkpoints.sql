-- Checkpoints of a warm-up stage at one config, by epoch. Parameters: $stage, $config_hash.
SELECT epoch, path, adapter_sha256, optimizer_sha256, mean_lr
FROM lora_checkpoints
WHERE stage = $stage AND config_hash = $config_hash
ORDER BY epoch;
