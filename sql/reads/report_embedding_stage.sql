-- The embedding stage whose vectors count a selection's near-duplicate clusters: the one the
-- selection's config names ($preferred, may be NULL), else the latest embedding run of the
-- selection's pipeline. No row when the pipeline has no embedding stage.
SELECT e.stage, e.config_hash
FROM stage_runs AS e
WHERE e.kind = 'embedding'
  AND e.pipeline = (SELECT pipeline FROM stage_runs WHERE stage = $selection ORDER BY finished_at DESC LIMIT 1)
ORDER BY coalesce(e.stage = $preferred, false) DESC, e.finished_at DESC
LIMIT 1;
