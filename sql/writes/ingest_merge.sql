-- Merge one source's staged Parquet files into the store (runs inside one transaction).
-- Parameters: $source, $samples_file, $counts_file, $rejected_file, $now.

-- New samples only: a sample already in the store (from any source) keeps its row and scores.
INSERT INTO samples
SELECT s.sample_id, $source, s.format, s.instruction, s.input, s.output, s.messages,
       s.n_turns, NULL, s.raw_record::JSON, $now, TRUE
FROM read_parquet($samples_file) AS s
ANTI JOIN samples AS existing ON existing.sample_id = s.sample_id;

-- MERGE, not ON CONFLICT: the same text runs on a DuckLake, which has no PRIMARY KEY.
MERGE INTO source_samples AS t
USING (
    SELECT c.sample_id, c.n_records, s.first_record_no
    FROM read_parquet($counts_file) AS c
    JOIN read_parquet($samples_file) AS s USING (sample_id)
) AS n
ON t.source = $source AND t.sample_id = n.sample_id
WHEN MATCHED THEN UPDATE SET n_records = n.n_records, first_record_no = n.first_record_no,
    last_seen = $now, active = TRUE
WHEN NOT MATCHED THEN INSERT (source, sample_id, n_records, first_record_no, first_seen, last_seen, active)
    VALUES ($source, n.sample_id, n.n_records, n.first_record_no, $now, $now, TRUE);

-- Samples that left the source are marked inactive, never deleted.
UPDATE source_samples SET active = FALSE
WHERE source = $source AND active
  AND sample_id NOT IN (SELECT sample_id FROM read_parquet($counts_file));

UPDATE samples SET active = EXISTS (
    SELECT 1 FROM source_samples AS ss WHERE ss.sample_id = samples.sample_id AND ss.active)
WHERE parent_id IS NULL
  AND sample_id IN (SELECT sample_id FROM source_samples WHERE source = $source);

DELETE FROM rejected_samples WHERE source = $source;

INSERT INTO rejected_samples
SELECT $source, r.source_file, r.record_no, r.location, r.reason, r.raw_record, $now
FROM read_parquet($rejected_file) AS r;
