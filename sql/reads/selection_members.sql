SELECT sample_id, rank, score
FROM selections
WHERE selection = $selection
ORDER BY rank;
