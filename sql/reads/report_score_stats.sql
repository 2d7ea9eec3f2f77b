-- Per numeric score column: count, mean and median over the pool and over the selected samples,
-- min and max over the pool. The score_values placeholder is reads/report_score_values.sql.
WITH {score_values}
SELECT score_column,
       count(*) AS pool_n, avg(value) AS pool_mean, median(value) AS pool_median,
       count(*) FILTER (WHERE selected) AS selected_n,
       avg(value) FILTER (WHERE selected) AS selected_mean,
       median(value) FILTER (WHERE selected) AS selected_median,
       min(value) AS pool_min, max(value) AS pool_max
FROM score_values
GROUP BY score_column;
