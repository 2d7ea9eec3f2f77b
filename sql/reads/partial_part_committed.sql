-- Whether a part file's rows are already in the stage table (left by a run that committed).
-- The table name comes from the kind registry; $stage, $config_hash, $part are parameters.
SELECT EXISTS (
    SELECT 1 FROM read_parquet($part) AS p
    JOIN {table} AS t ON t.sample_id = p.sample_id
    WHERE t.stage = $stage AND t.config_hash = $config_hash);
