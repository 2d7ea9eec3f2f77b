-- The scorers a training stage stored at one config. Parameters: $stage, $config_hash.
SELECT scorer, backend, path, files, n_train, n_heldout, heldout_spearman, heldout_mae, details
FROM trained_scorers
WHERE stage = $stage AND config_hash = $config_hash
ORDER BY scorer;
