-- deita_scorer_train stage: how each sample took part in training the DEITA scorers (the scorers
-- themselves are in trained_scorers).
CREATE TABLE IF NOT EXISTS deita_scorer_train (
    stage                VARCHAR NOT NULL,
    config_hash          VARCHAR NOT NULL,
    sample_id            VARCHAR NOT NULL,
    split                VARCHAR NOT NULL,  -- train | heldout | unlabelled | added_later (after training)
    n_complexity_labels  INTEGER NOT NULL,  -- scored Evol-Complexity variants used
    n_quality_labels     INTEGER NOT NULL,  -- scored Evol-Quality variants used
    PRIMARY KEY (stage, config_hash, sample_id)
);
