-- Replace an influence_distillation selection's targets and per-sample influence.
-- Parameters: $selection, $targets_file, $scores_file.
DELETE FROM target_samples WHERE selection = $selection;

INSERT INTO target_samples
SELECT $selection, t.target, t.sample_id, t.split, t.subtask, t.instruction, t.output, t.messages
FROM read_parquet($targets_file) AS t;

DELETE FROM influence_scores WHERE selection = $selection;

INSERT INTO influence_scores
SELECT $selection, s.sample_id, s.subtask, s.influence, s.weight, s.landmark
FROM read_parquet($scores_file) AS s;
