-- Samples that arrived with the latest ingest of each source (everything, on a first run).
WITH runs AS (
    SELECT stage AS source, started_at,
           row_number() OVER (PARTITION BY stage ORDER BY started_at DESC) AS recency
    FROM stage_runs WHERE kind = 'source')
SELECT ss.source, count(*) AS new_samples
FROM source_samples AS ss
JOIN runs AS latest ON latest.source = ss.source AND latest.recency = 1
WHERE ss.first_seen >= latest.started_at
GROUP BY ss.source;
