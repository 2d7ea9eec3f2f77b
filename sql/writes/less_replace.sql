-- Replace a selection's target samples. Parameters: $selection, $targets_file.
DELETE FROM target_samples WHERE selection = $selection;

INSERT INTO target_samples
SELECT $selection, t.target, t.sample_id, t.split, t.subtask, t.instruction, t.output, t.messages
FROM read_parquet($targets_file) AS t;

DELETE FROM less_scores WHERE selection = $selection;

INSERT INTO less_scores
SELECT $selection, s.sample_id, s.subtask, s.score
FROM read_parquet($scores_file) AS s;
