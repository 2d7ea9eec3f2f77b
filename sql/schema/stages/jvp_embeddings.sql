-- jvp_embeddings stage (Influence Distillation): one JVP embedding per sample and config.
CREATE TABLE IF NOT EXISTS jvp_embeddings (
    stage        VARCHAR NOT NULL,
    config_hash  VARCHAR NOT NULL,
    sample_id    VARCHAR NOT NULL,
    embedding    FLOAT[] NOT NULL,  -- tangents of the first blocks' last-token output, concatenated (projected)
    n_tokens     INTEGER NOT NULL,  -- tokens seen (after truncation to max_length)
    truncated    BOOLEAN NOT NULL,
    PRIMARY KEY (stage, config_hash, sample_id)
);
