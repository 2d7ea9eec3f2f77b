-- el2n and grand stages: scores of a LoRA model after a few training steps, averaged over runs.
CREATE TABLE IF NOT EXISTS el2n_scores (
    stage        VARCHAR NOT NULL,
    config_hash  VARCHAR NOT NULL,
    sample_id    VARCHAR NOT NULL,
    el2n         DOUBLE,             -- mean over runs of the mean response-token ||softmax - onehot||_2
    el2n_std     DOUBLE,             -- standard deviation over runs
    runs         INTEGER NOT NULL,
    PRIMARY KEY (stage, config_hash, sample_id)
);

CREATE TABLE IF NOT EXISTS grand_scores (
    stage        VARCHAR NOT NULL,
    config_hash  VARCHAR NOT NULL,
    sample_id    VARCHAR NOT NULL,
    grand        DOUBLE,             -- mean over runs of ||grad of the sample's loss w.r.t. the LoRA parameters||
    grand_std    DOUBLE,
    runs         INTEGER NOT NULL,
    PRIMARY KEY (stage, config_hash, sample_id)
);
