-- A CTE fragment (no statement of its own): one row per (pool sample, numeric score column) with a
-- finite value, flagged `selected` when the sample is a member of $selection. The pool is the active
-- samples of the selection's input ($input_selection NULL: all of them). The columns placeholder takes
-- one `CAST("<stage>__<column>" AS DOUBLE) AS "<stage>__<column>"` item per `sample_scores` score;
-- `selection_score` is the selection's own score (NULL outside it).
pool AS (
    SELECT m.sample_id IS NOT NULL AS selected, CAST(m.score AS DOUBLE) AS selection_score{columns}
    FROM sample_scores AS v
    LEFT JOIN (SELECT sample_id, score FROM selections WHERE selection = $selection) AS m USING (sample_id)
    WHERE $input_selection IS NULL
       OR v.sample_id IN (SELECT sample_id FROM selections WHERE selection = $input_selection)
),
long_values AS (
    UNPIVOT pool ON COLUMNS(* EXCLUDE (selected)) INTO NAME score_column VALUE value
),
score_values AS (
    SELECT score_column, selected, value FROM long_values WHERE isfinite(value)
)
