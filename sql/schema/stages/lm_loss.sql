-- lm_loss stage: the causal LM's loss on each sample's last assistant turn given the prompt.
CREATE TABLE IF NOT EXISTS lm_loss (
    stage              VARCHAR NOT NULL,
    config_hash        VARCHAR NOT NULL,
    sample_id          VARCHAR NOT NULL,
    loss               DOUBLE,            -- mean response-token cross-entropy (nats); NULL if no response token
    perplexity         DOUBLE,            -- exp(loss)
    el2n               DOUBLE,            -- mean response-token ||softmax - onehot||_2 under this model
    n_response_tokens  INTEGER NOT NULL,
    n_tokens           INTEGER NOT NULL,  -- prompt + response after truncation
    truncated          BOOLEAN NOT NULL,
    PRIMARY KEY (stage, config_hash, sample_id)
);
