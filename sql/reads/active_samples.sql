SELECT s.sample_id{columns}
FROM samples AS s
WHERE s.active
ORDER BY s.sample_id;
