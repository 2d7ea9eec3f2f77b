-- Per numeric score column: counts of pool and selected values in equal-width bins over the pool's
-- range: one bin per integer for integer-valued columns spanning fewer than $bins values, else $bins
-- bins between min and max. Computed in DuckDB so memory does not grow with the pool.
-- The score_values placeholder is reads/report_score_values.sql.
WITH {score_values},
ranges AS (
    SELECT score_column, min(value) AS lo, max(value) AS hi, bool_and(value = round(value)) AS integral
    FROM score_values
    GROUP BY score_column
),
bounds AS (
    SELECT score_column,
           CASE WHEN (integral AND hi - lo < $bins) OR hi = lo THEN lo - 0.5 ELSE lo END AS lo_edge,
           CASE WHEN (integral AND hi - lo < $bins) OR hi = lo THEN hi + 0.5 ELSE hi END AS hi_edge,
           CAST(CASE WHEN integral AND hi - lo < $bins THEN hi - lo + 1 WHEN hi = lo THEN 1 ELSE $bins END
                AS INTEGER) AS n_bins
    FROM ranges
)
SELECT b.score_column, b.lo_edge, b.hi_edge, b.n_bins,
       least(CAST(floor((v.value - b.lo_edge) / (b.hi_edge - b.lo_edge) * b.n_bins) AS INTEGER), b.n_bins - 1)
           AS bin,
       count(*) AS pool_count,
       count(*) FILTER (WHERE v.selected) AS selected_count
FROM score_values AS v
JOIN bounds AS b USING (score_column)
GROUP BY ALL
ORDER BY b.score_column, bin;
