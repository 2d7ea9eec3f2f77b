-- Store the samples a lift_expand stage produced, each with its parent, and keep active exactly
-- the ones its current config lists (this run's and earlier runs'). Runs after its rows are inserted.
-- Parameters: $stage, $config_hash, $now, $samples_file (sample_id, parent_id, instruction, output,
-- messages, raw_record).

INSERT INTO samples
SELECT g.sample_id, $stage, 'generated', g.instruction, '', g.output, g.messages, 1, g.parent_id,
       g.raw_record::JSON, $now, TRUE
FROM read_parquet($samples_file) AS g
ANTI JOIN samples AS existing ON existing.sample_id = g.sample_id;

-- MERGE, not ON CONFLICT: the same text runs on a DuckLake, which has no PRIMARY KEY.
MERGE INTO source_samples AS t
USING (SELECT DISTINCT sample_id FROM read_parquet($samples_file)) AS g
ON t.source = $stage AND t.sample_id = g.sample_id
WHEN MATCHED THEN UPDATE SET last_seen = $now, active = TRUE
WHEN NOT MATCHED THEN INSERT (source, sample_id, n_records, first_record_no, first_seen, last_seen, active)
    VALUES ($stage, g.sample_id, 1, 0, $now, $now, TRUE);

UPDATE source_samples SET active = sample_id IN (
    SELECT child_id FROM lift_expand
    WHERE stage = $stage AND config_hash = $config_hash AND child_id IS NOT NULL)
WHERE source = $stage;
