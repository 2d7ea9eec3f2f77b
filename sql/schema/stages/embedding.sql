-- embedding stage: one sentence-embedding vector per sample and config.
-- FLOAT[] (a list) so one table serves models of any dimension; cast to FLOAT[d] for
-- DuckDB's array functions, e.g. array_cosine_similarity(embedding::FLOAT[384], ...).
CREATE TABLE IF NOT EXISTS embeddings (
    stage        VARCHAR NOT NULL,
    config_hash  VARCHAR NOT NULL,
    sample_id    VARCHAR NOT NULL,
    embedding    FLOAT[] NOT NULL,
    n_tokens     INTEGER NOT NULL,   -- tokens of the embedded text before truncation
    truncated    BOOLEAN NOT NULL,   -- longer than the model's max_seq_length
    PRIMARY KEY (stage, config_hash, sample_id)
);
