-- Store the samples a lift_expand stage produced, each with its parent, and keep active exactly
-- the ones its current config lists (this run's and earlier runs'). Runs after its rows are inserted.
-- Parameters: $stage, $config_hash, $now, $samples_file (sample_id, parent_id, instruction, output,
-- messages, raw_record).

INSERT INTO samples
SELECT g.sample_id, $stage, 'generated', g.instruction, '', g.output, g.messages, 1, g.parent_id,
       g.raw_record::JSON, $now, TRUE
FROM read_parquet($samples_file) AS g
ANTI JOIN samples AS existing ON existing.sample_id = g.sample_id;

INSERT INTO source_samples
SELECT $stage, g.sample_id, 1, 0, $now, $now, TRUE
FROM read_parquet($samples_file) AS g
ON CONFLICT (source, sample_id) DO UPDATE SET last_seen = excluded.last_seen, active = TRUE;

UPDATE source_samples SET active = sample_id IN (
    SELECT child_id FROM lift_expand
    WHERE stage = $stage AND config_hash = $config_hash AND child_id IS NOT NULL)
WHERE source = $stage;
