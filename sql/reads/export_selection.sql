-- Members of a selection with their samples, best first.
SELECT s.sample_id, s.source, s.format, s.instruction, s.input, s.output, s.messages, s.n_turns,
       s.parent_id, s.raw_record::VARCHAR AS raw_record, m.rank, m.score
FROM selections AS m
JOIN samples AS s USING (sample_id)
WHERE m.selection = $selection
ORDER BY m.rank;
