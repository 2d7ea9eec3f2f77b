-- Pending samples minus those already in the part files of an interrupted run.
-- The pending-samples query is filled in below; $partial_files is the list of part files.
SELECT p.*
FROM ({pending}) AS p
WHERE p.sample_id NOT IN (SELECT sample_id FROM read_parquet($partial_files))
ORDER BY p.sample_id;
