-- Replace an evaluation's results and held-out samples. Parameters: $evaluation, $results_file, $samples_file.
DELETE FROM evaluation_results WHERE evaluation = $evaluation;

INSERT INTO evaluation_results BY NAME
SELECT * FROM read_parquet($results_file);

DELETE FROM evaluation_samples WHERE evaluation = $evaluation;

INSERT INTO evaluation_samples BY NAME
SELECT * FROM read_parquet($samples_file);
