-- Selections recorded in the file: names with members in `selections`, and the pipeline's selections
-- that `sample_scores` flags (BOOLEAN column in_<name>) and that ran (a `stage_runs` row), so a
-- selection that kept nothing is known too.
SELECT DISTINCT selection AS name FROM selections
UNION
SELECT substr(column_name, 4) AS name
FROM duckdb_columns()
WHERE table_name = 'sample_scores' AND starts_with(column_name, 'in_') AND data_type = 'BOOLEAN'
  AND substr(column_name, 4) IN (SELECT stage FROM stage_runs)
ORDER BY name;
