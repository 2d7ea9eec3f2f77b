-- Influence Distillation: every pool sample's first-order influence p on every target subtask
-- and its optimal weight for that subtask (zero for most samples).
CREATE TABLE IF NOT EXISTS influence_scores (
    selection    VARCHAR NOT NULL,
    sample_id    VARCHAR NOT NULL,
    subtask      VARCHAR NOT NULL,   -- <target>:<subtask>
    influence    DOUBLE NOT NULL,    -- p = <update direction, mean target gradient>, propagated from landmarks
    weight       DOUBLE NOT NULL,    -- optimal weight (Σ over the pool = pool size)
    landmark     BOOLEAN NOT NULL,   -- exact gradient (true) or propagated by kernel ridge regression
    PRIMARY KEY (selection, sample_id, subtask)
);
