-- lora_warmup stage (LESS): which samples the warm-up trained on; its checkpoints are in lora_checkpoints.
CREATE TABLE IF NOT EXISTS lora_warmup (
    stage            VARCHAR NOT NULL,
    config_hash      VARCHAR NOT NULL,
    sample_id        VARCHAR NOT NULL,
    in_training_set  BOOLEAN NOT NULL,
    PRIMARY KEY (stage, config_hash, sample_id)
);

-- One row per warm-up epoch: the adapter + AdamW state folder, their SHA-256, the epoch's mean lr.
CREATE TABLE IF NOT EXISTS lora_checkpoints (
    stage             VARCHAR NOT NULL,
    config_hash       VARCHAR NOT NULL,
    epoch             INTEGER NOT NULL,
    path              VARCHAR NOT NULL,
    adapter_sha256    VARCHAR NOT NULL,
    optimizer_sha256  VARCHAR NOT NULL,
    mean_lr           DOUBLE NOT NULL,
    created_at        TIMESTAMP NOT NULL,
    PRIMARY KEY (stage, config_hash, epoch)
);
