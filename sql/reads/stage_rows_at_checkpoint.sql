-- A checkpointed stage's rows (grad_features) at one config_hash and checkpoint, for active samples.
SELECT t.sample_id{columns}
FROM {table} AS t
JOIN samples AS s USING (sample_id)
WHERE s.active AND t.stage = $stage AND t.config_hash = $config_hash AND t.checkpoint = $checkpoint{restrict}
ORDER BY t.sample_id;
