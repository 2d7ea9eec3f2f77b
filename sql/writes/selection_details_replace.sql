-- Parameters: $selection, $details_file.
DELETE FROM selection_details WHERE selection = $selection;

INSERT INTO selection_details
SELECT $selection, d.sample_id, d.role, d.cluster, d.related_id, d.value
FROM read_parquet($details_file) AS d;
