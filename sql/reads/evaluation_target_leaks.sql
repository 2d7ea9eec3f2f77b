-- Target samples a selection of the pipeline used for selecting (validation part) that an
-- evaluation holds out. Parameters: $sample_ids (held-out target samples), $selections.
SELECT selection, target, count(*) AS samples
FROM target_samples
WHERE split = 'validation'
  AND sample_id IN (SELECT unnest($sample_ids))
  AND selection IN (SELECT unnest($selections))
GROUP BY selection, target
ORDER BY selection, target;
