-- passed, total rows, distinct non-null sample_ids
SELECT count(*) = count(DISTINCT sample_id) AND count(*) = count(sample_id),
       count(*), count(DISTINCT sample_id)
FROM samples;
