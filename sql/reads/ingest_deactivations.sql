-- Before merging a source's staged ingest: its active samples now, and how many of them the
-- staged counts no longer hold (they would be deactivated). Parameters: $source, $counts_file.
SELECT count(*) AS active,
       count(*) FILTER (WHERE sample_id NOT IN (SELECT sample_id FROM read_parquet($counts_file))) AS deactivated
FROM source_samples
WHERE source = $source AND active;
