-- Why records were rejected, per source, most frequent first.
SELECT source, regexp_replace(reason, '[0-9]+', 'N', 'g') AS reason, count(*) AS records
FROM rejected_samples
GROUP BY ALL
ORDER BY records DESC;
