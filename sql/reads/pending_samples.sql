-- Active samples without a row in the stage table for this stage's current config_hash.
-- The table, column list and optional input_selection filter are filled in from the stage kind registry;
-- $stage and $config_hash are parameters.
SELECT s.sample_id{columns}
FROM samples AS s
WHERE s.active{restrict}
  AND NOT EXISTS (
      SELECT 1 FROM {table} AS t
      WHERE t.stage = $stage AND t.config_hash = $config_hash AND t.sample_id = s.sample_id)
ORDER BY s.sample_id;
