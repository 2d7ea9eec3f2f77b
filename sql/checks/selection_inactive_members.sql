-- Members of a selection that are not active samples.
SELECT count(*)
FROM selections AS m
LEFT JOIN samples AS s USING (sample_id)
WHERE m.selection = $selection AND (s.sample_id IS NULL OR NOT s.active);
