-- Record one trained scorer (a scorer of the same stage, config and name is replaced). Parameters:
-- $stage, $config_hash, $scorer, $backend, $path, $files, $n_train, $n_heldout, $heldout_spearman,
-- $heldout_mae, $details, $now.
-- MERGE, not ON CONFLICT: the same text runs on a DuckLake, which has no PRIMARY KEY.
MERGE INTO trained_scorers AS t
USING (SELECT $stage AS stage, $config_hash AS config_hash, $scorer AS scorer) AS k
ON t.stage = k.stage AND t.config_hash = k.config_hash AND t.scorer = k.scorer
WHEN MATCHED THEN UPDATE SET backend = $backend, path = $path, files = $files, n_train = $n_train,
    n_heldout = $n_heldout, heldout_spearman = $heldout_spearman, heldout_mae = $heldout_mae,
    details = $details, created_at = $now
WHEN NOT MATCHED THEN INSERT (stage, config_hash, scorer, backend, path, files, n_train, n_heldout,
                              heldout_spearman, heldout_mae, details, created_at)
    VALUES (k.stage, k.config_hash, k.scorer, $backend, $path, $files, $n_train, $n_heldout,
            $heldout_spearman, $heldout_mae, $details, $now);
