-- Samples the k-center coreset kept that the random baseline did not (demo pipeline names).
SELECT s.sample_id, left(s.instruction, 80) AS instruction
FROM sample_scores AS x
JOIN samples AS s USING (sample_id)
WHERE x.in_kcenter_5pct AND NOT x.in_random_5pct
ORDER BY s.sample_id;
