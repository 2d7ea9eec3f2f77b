-- A generated sample is active while the stage that made it still lists it (its current config)
-- and its original sample is active. Run after every ingest and every generating stage.
UPDATE samples SET active = refreshed.active
FROM (
    WITH RECURSIVE chain(sample_id, ancestor_id) AS (
        SELECT sample_id, parent_id FROM samples WHERE parent_id IS NOT NULL
        UNION ALL
        SELECT c.sample_id, s.parent_id
        FROM chain AS c JOIN samples AS s ON s.sample_id = c.ancestor_id
        WHERE s.parent_id IS NOT NULL)
    SELECT c.sample_id,
           bool_and(root.active) AND bool_or(ss.active) AS active
    FROM chain AS c
    JOIN samples AS root ON root.sample_id = c.ancestor_id AND root.parent_id IS NULL
    JOIN source_samples AS ss ON ss.sample_id = c.sample_id
    GROUP BY c.sample_id
) AS refreshed
WHERE samples.sample_id = refreshed.sample_id;
