SELECT s.sample_id{columns}
FROM samples AS s
WHERE s.active{restrict}
ORDER BY s.sample_id;
