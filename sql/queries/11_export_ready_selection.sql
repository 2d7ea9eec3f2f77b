-- A selection's members in rank order with their conversations, as an exporter sees them.
SELECT m.rank, m.score, s.source, s.n_turns, left(s.instruction, 60) AS instruction
FROM selections AS m JOIN samples AS s USING (sample_id)
WHERE m.selection = 'kcenter_5pct'
ORDER BY m.rank
LIMIT 20;
