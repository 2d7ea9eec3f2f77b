-- Target tasks of target-aware selections (LESS): validation part used for selection,
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

-- LESS influence of every pool sample on every target subtask (the selection keeps the max).
CREATE TABLE IF NOT EXISTS less_scores (
    selection    VARCHAR NOT NULL,
    sample_id    VARCHAR NOT NULL,
    subtask      VARCHAR NOT NULL,   -- <target>:<subtask>
    score        DOUBLE NOT NULL,    -- checkpoint-weighted cosine, mean over the subtask's validation samples
    PRIMARY KEY (selection, sample_id, subtask)
);
