-- lift_expand stage: one row per original sample and round; generated samples go to `samples`
-- (format 'generated', parent_id = the previous round's sample, source = the stage name).
CREATE TABLE IF NOT EXISTS lift_expand (
    stage        VARCHAR NOT NULL,
    config_hash  VARCHAR NOT NULL,
    sample_id    VARCHAR NOT NULL,   -- the original sample
    round        INTEGER NOT NULL,   -- 1 = rewrite of the original, r = rewrite of round r - 1
    child_id     VARCHAR,            -- the generated sample; NULL when this round failed
    status       VARCHAR NOT NULL,   -- ok | empty_rewrite | empty_answer | request_rejected
    instruction  VARCHAR,            -- the rewritten instruction
    detail       VARCHAR,            -- the raw answer or error when status is not ok
    PRIMARY KEY (stage, config_hash, sample_id, round)
);
