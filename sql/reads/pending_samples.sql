-- Active samples without a row in {table} for this stage's current config_hash.
-- {table}, {columns} and {restrict} (an optional input_selection filter) are filled in from the stage kind registry; $stage, $config_hash are parameters.
SELECT s.sample_id{columns}
FROM samples AS s
WHERE s.active{restrict}
  AND NOT EXISTS (
      SELECT 1 FROM {table} AS t
      WHERE t.stage = $stage AND t.config_hash = $config_hash AND t.sample_id = s.sample_id)
ORDER BY s.sample_id;
