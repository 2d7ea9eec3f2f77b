-- Replace an evaluation's results, held-out samples and per-sample losses.
-- Parameters: $evaluation, $results_file, $samples_file, $losses_file.
DELETE FROM evaluation_results WHERE evaluation = $evaluation;

INSERT INTO evaluation_results BY NAME
SELECT * FROM read_parquet($results_file);

DELETE FROM evaluation_samples WHERE evaluation = $evaluation;

INSERT INTO evaluation_samples BY NAME
SELECT * FROM read_parquet($samples_file);

DELETE FROM evaluation_losses WHERE evaluation = $evaluation;

INSERT INTO evaluation_losses BY NAME
SELECT * FROM read_parquet($losses_file);
