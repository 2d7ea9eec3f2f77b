-- Members of a selection with the config hash they were selected under. Parameter: $selection.
SELECT sample_id, config_hash
FROM selections
WHERE selection = $selection
ORDER BY sample_id;
