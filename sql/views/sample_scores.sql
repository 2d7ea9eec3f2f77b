-- One row per active sample: every scalar column of every stage (as <stage>__<column>)
-- and one boolean per selection (in_<selection>). Rebuilt whenever the pipeline's assets run.
-- The column list and joins are filled in from the pipeline's stages and selections.
CREATE OR REPLACE VIEW sample_scores AS
SELECT s.sample_id, s.source, s.format, s.n_turns{columns}
FROM samples AS s
{joins}
WHERE s.active;
