-- Trained scorers: DEITA complexity / quality scorers (a ridge head on sentence embeddings, or a
-- LoRA adapter of the causal LM) and the reward head fitted to an LLM judge's scores. One row per
-- (training stage, config, scorer): where its files are, their SHA-256, and its held-out fit.
CREATE TABLE IF NOT EXISTS trained_scorers (
    stage             VARCHAR NOT NULL,
    config_hash       VARCHAR NOT NULL,
    scorer            VARCHAR NOT NULL,  -- complexity | quality | reward
    backend           VARCHAR NOT NULL,  -- embedding_head | causal_lm
    path              VARCHAR NOT NULL,  -- folder under <duckdb file>.artifacts/<stage>/<config_hash>/
    files             JSON NOT NULL,     -- file name -> SHA-256
    n_train           INTEGER NOT NULL,  -- labels trained on
    n_heldout         INTEGER NOT NULL,  -- labels held out (whole samples, seeded)
    heldout_spearman  DOUBLE,            -- NULL when undefined (< 2 held-out labels, or constant)
    heldout_mae       DOUBLE,
    details           JSON,              -- backend facts: ridge alpha, training loss, label scale, ...
    created_at        TIMESTAMP NOT NULL,
    PRIMARY KEY (stage, config_hash, scorer)
);
