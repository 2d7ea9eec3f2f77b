-- Samples that left their source: kept with their scores, marked inactive.
SELECT ss.source, count(*) FILTER (WHERE NOT ss.active) AS inactive, count(*) AS ever_seen
FROM source_samples AS ss
GROUP BY ss.source;
