-- Replace the target samples (validation and held-out parts) a target-aware selection read.
-- Parameters: $selection, $targets_file.
DELETE FROM target_samples WHERE selection = $selection;

INSERT INTO target_samples
SELECT $selection, t.target, t.sample_id, t.split, t.subtask, t.instruction, t.output, t.messages
FROM read_parquet($targets_file) AS t;
