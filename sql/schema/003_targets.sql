-- Target tasks of target-aware selections (LESS, Influence Distillation): validation part used for selection,
-- held-out part kept for evaluation. Replaced whenever the selection runs.
CREATE TABLE IF NOT EXISTS target_samples (
    selection    VARCHAR NOT NULL,
    target       VARCHAR NOT NULL,
    sample_id    VARCHAR NOT NULL,
    split        VARCHAR NOT NULL,   -- validation | heldout
    subtask      VARCHAR NOT NULL,
    instruction  VARCHAR NOT NULL,
    output       VARCHAR NOT NULL,
    messages     STRUCT(role VARCHAR, content VARCHAR)[] NOT NULL,
    PRIMARY KEY (selection, target, sample_id)
);
