-- grad_features stage (LESS): one row per sample and warm-up checkpoint.
CREATE TABLE IF NOT EXISTS grad_features (
    stage              VARCHAR NOT NULL,
    config_hash        VARCHAR NOT NULL,
    sample_id          VARCHAR NOT NULL,
    checkpoint         INTEGER NOT NULL,  -- warm-up epoch
    features           FLOAT[] NOT NULL,  -- projected Adam-preconditioned LoRA gradient (not normalised)
    n_response_tokens  INTEGER NOT NULL,
    PRIMARY KEY (stage, config_hash, sample_id, checkpoint)
);
