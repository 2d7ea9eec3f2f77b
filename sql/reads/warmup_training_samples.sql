-- The samples a lora_warmup stage trained on (its in_training_set rows at one config), with their
-- conversations. Parameters: $stage, $config_hash.
SELECT w.sample_id, s.messages
FROM lora_warmup AS w
JOIN samples AS s USING (sample_id)
WHERE w.stage = $stage AND w.config_hash = $config_hash AND w.in_training_set
ORDER BY w.sample_id;
