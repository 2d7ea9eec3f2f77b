-- LESS influence of every pool sample on every target subtask (the selection keeps the max).
CREATE TABLE IF NOT EXISTS less_scores (
    selection    VARCHAR NOT NULL,
    sample_id    VARCHAR NOT NULL,
    subtask      VARCHAR NOT NULL,   -- <target>:<subtask>
    score        DOUBLE NOT NULL,    -- checkpoint-weighted cosine, mean over the subtask's validation samples
    PRIMARY KEY (selection, sample_id, subtask)
);
