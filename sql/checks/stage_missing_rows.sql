-- Active samples without a row in the stage table for the stage's current config.
SELECT count(*)
FROM samples AS s
WHERE s.active{restrict}
  AND NOT EXISTS (
      SELECT 1 FROM {table} AS t
      WHERE t.stage = $stage AND t.config_hash = $config_hash AND t.sample_id = s.sample_id);
