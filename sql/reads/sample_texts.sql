-- Texts of the given samples (active or not). Parameter: $sample_ids (a list).
SELECT s.sample_id, s.instruction, s.input, s.output, s.messages
FROM samples AS s
WHERE s.sample_id IN (SELECT unnest($sample_ids))
ORDER BY s.sample_id;
