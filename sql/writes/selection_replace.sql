-- Replace a selection's members with the staged ones. Parameters: $selection, $config_hash, $members_file, $now.
DELETE FROM selections WHERE selection = $selection;

INSERT INTO selections
SELECT $selection, m.sample_id, m.rank, m.score, $config_hash, $now
FROM read_parquet($members_file) AS m;
