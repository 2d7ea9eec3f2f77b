-- One row per selection: size, share of the active pool, score statistics, last update.
CREATE OR REPLACE VIEW selection_summary AS
SELECT m.selection,
       count(*) AS size,
       round(count(*) / (SELECT count(*) FROM samples WHERE active), 4) AS share_of_pool,
       min(m.score) AS min_score, avg(m.score) AS mean_score, max(m.score) AS max_score,
       max(m.selected_at) AS selected_at
FROM selections AS m
GROUP BY m.selection
ORDER BY m.selection;

-- Pairwise overlap between selections: shared members and Jaccard index.
CREATE OR REPLACE VIEW selection_overlap AS
WITH sizes AS (SELECT selection, count(*) AS n FROM selections GROUP BY selection),
     shared AS (
         SELECT a.selection AS selection_a, b.selection AS selection_b, count(*) AS shared
         FROM selections AS a JOIN selections AS b ON a.sample_id = b.sample_id AND a.selection < b.selection
         GROUP BY 1, 2)
SELECT s.selection_a, s.selection_b, s.shared,
       round(s.shared / (sa.n + sb.n - s.shared), 4) AS jaccard
FROM shared AS s
JOIN sizes AS sa ON sa.selection = s.selection_a
JOIN sizes AS sb ON sb.selection = s.selection_b
ORDER BY jaccard DESC;
