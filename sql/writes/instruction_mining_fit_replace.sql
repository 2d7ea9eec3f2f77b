-- Store an instruction_mining_fit stage's rule, its terms and its subsets (replacing any earlier
-- fit at the same config). Parameters: $stage, $config_hash, $fit_file, $terms_file, $subsets_file, $now.
DELETE FROM instruction_mining_fits WHERE stage = $stage AND config_hash = $config_hash;
DELETE FROM instruction_mining_coefficients WHERE stage = $stage AND config_hash = $config_hash;
DELETE FROM instruction_mining_subsets WHERE stage = $stage AND config_hash = $config_hash;

INSERT INTO instruction_mining_fits
SELECT $stage, $config_hash, f.response, f.indicators, f.n_subsets, f.subset_size, f.pool_size, f.r_squared,
       f.adjusted_r_squared, f.rmse, f.target, f.validation_samples, f.base_validation_loss, $now
FROM read_parquet($fit_file) AS f;

INSERT INTO instruction_mining_coefficients
SELECT $stage, $config_hash, t.term, t.coefficient, t.standardised_coefficient, t.std_error, t.t_value,
       t.p_value, t.subset_mean, t.subset_std, t.imputation_value
FROM read_parquet($terms_file) AS t;

INSERT INTO instruction_mining_subsets
SELECT $stage, $config_hash, s.subset, s.sample_ids, s.mean_indicators, s.validation_loss, s.training_steps,
       s.final_training_loss
FROM read_parquet($subsets_file) AS s;
