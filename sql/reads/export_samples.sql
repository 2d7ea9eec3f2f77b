-- Every active sample, in the order it first arrived.
SELECT s.sample_id, s.source, s.format, s.instruction, s.input, s.output, s.messages, s.n_turns,
       s.parent_id, s.raw_record::VARCHAR AS raw_record,
       CAST(row_number() OVER (ORDER BY s.first_seen, s.source, s.sample_id) AS INTEGER) AS rank,
       CAST(NULL AS DOUBLE) AS score
FROM samples AS s
WHERE s.active
ORDER BY rank;
