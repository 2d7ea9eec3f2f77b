-- Rows of a Hub export: one schema for every member. The placeholders are the export query
-- (reads/export_selection.sql or reads/export_samples.sql) and the original fields' columns.
SELECT e.messages, e.sample_id, e.source, e.rank, e.score, {original}
FROM ({export}
) AS e
ORDER BY e.rank;
