-- Record one trained scorer. Parameters: $stage, $config_hash, $scorer, $backend, $path, $files,
-- $n_train, $n_heldout, $heldout_spearman, $heldout_mae, $details, $now.
INSERT INTO trained_scorers VALUES ($stage, $config_hash, $scorer, $backend, $path, $files, $n_train, $n_heldout,
                                    $heldout_spearman, $heldout_mae, $details, $now)
ON CONFLICT (stage, config_hash, scorer) DO UPDATE SET backend = excluded.backend, path = excluded.path,
    files = excluded.files, n_train = excluded.n_train, n_heldout = excluded.n_heldout,
    heldout_spearman = excluded.heldout_spearman, heldout_mae = excluded.heldout_mae,
    details = excluded.details, created_at = excluded.created_at;
