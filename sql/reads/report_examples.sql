-- Members of $selection with a clipped preview of their text ($chars + 1 characters, so the caller
-- knows when it clipped), ordered by score ($highest_first: best first, else worst first; ties and
-- unscored selections by rank), at most $limit rows.
SELECT m.rank, m.score, m.sample_id,
       left(s.instruction, $chars + 1) AS instruction,
       left(s.input, $chars + 1) AS input,
       left(s.output, $chars + 1) AS output
FROM selections AS m
JOIN samples AS s USING (sample_id)
WHERE m.selection = $selection
ORDER BY CASE WHEN $highest_first THEN m.score END DESC NULLS LAST,
         CASE WHEN NOT $highest_first THEN m.score END ASC NULLS LAST,
         CASE WHEN $highest_first THEN m.rank END ASC,
         CASE WHEN NOT $highest_first THEN m.rank END DESC
LIMIT $limit;
