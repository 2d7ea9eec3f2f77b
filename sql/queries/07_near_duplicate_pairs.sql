-- Dropped near-duplicates next to the kept sample they repeat, most similar first.
SELECT round(d.value, 4) AS cosine, left(dropped.instruction, 60) AS dropped, left(kept.instruction, 60) AS kept
FROM selection_details AS d
JOIN samples AS dropped ON dropped.sample_id = d.sample_id
JOIN samples AS kept ON kept.sample_id = d.related_id
WHERE d.role = 'duplicate'
ORDER BY d.value DESC
LIMIT 20;
