-- lobass stage: learnability = loss under the base model minus loss after LoRA fine-tuning.
CREATE TABLE IF NOT EXISTS lobass_scores (
    stage                    VARCHAR NOT NULL,
    config_hash              VARCHAR NOT NULL,
    sample_id                VARCHAR NOT NULL,
    loss_base                DOUBLE,   -- mean response-token loss, adapters disabled
    loss_finetuned           DOUBLE,   -- the same after fine-tuning
    learnability             DOUBLE,   -- loss_base - loss_finetuned
    learnability_normalised  DOUBLE,   -- (loss_base - loss_finetuned) / loss_base
    in_training_set          BOOLEAN NOT NULL,
    PRIMARY KEY (stage, config_hash, sample_id)
);
