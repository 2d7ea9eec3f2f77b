-- lm_embedding stage: a causal LM's last-layer hidden state at the last token of each whole
-- conversation (DEITA's representation), one vector per sample and config. FLOAT[] like
-- `embeddings`, so the embedding-reading selections read either table's `embedding`.
CREATE TABLE IF NOT EXISTS lm_embeddings (
    stage        VARCHAR NOT NULL,
    config_hash  VARCHAR NOT NULL,
    sample_id    VARCHAR NOT NULL,
    embedding    FLOAT[] NOT NULL,
    n_tokens     INTEGER NOT NULL,   -- tokens of the rendered conversation before truncation
    truncated    BOOLEAN NOT NULL,   -- longer than max_length (the start was kept)
    PRIMARY KEY (stage, config_hash, sample_id)
);
