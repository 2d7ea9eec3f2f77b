-- Active samples with the order they arrived in: when first ingested, then the record number in the
-- file of the source that first produced them (NULL for generated samples). Sorted by sample_id.
SELECT s.sample_id, s.first_seen, ss.first_record_no
FROM samples AS s
LEFT JOIN source_samples AS ss ON ss.source = s.source AND ss.sample_id = s.sample_id
WHERE s.active{restrict}
ORDER BY s.sample_id;
