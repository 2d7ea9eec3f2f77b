-- Every generated sample (e.g. LIFT expansion) with the chain of parents back to its original.
WITH RECURSIVE chain(sample_id, ancestor_id, depth) AS (
    SELECT sample_id, parent_id, 1 FROM samples WHERE parent_id IS NOT NULL
    UNION ALL
    SELECT c.sample_id, s.parent_id, c.depth + 1
    FROM chain AS c JOIN samples AS s ON s.sample_id = c.ancestor_id
    WHERE s.parent_id IS NOT NULL)
SELECT c.sample_id, c.ancestor_id, c.depth, left(a.instruction, 60) AS ancestor_instruction
FROM chain AS c JOIN samples AS a ON a.sample_id = c.ancestor_id
ORDER BY c.sample_id, c.depth;
