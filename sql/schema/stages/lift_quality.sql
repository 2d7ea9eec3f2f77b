-- lift_quality stage: LIFT's 100-point rubric rated by an LLM (mean over rated turns).
CREATE TABLE IF NOT EXISTS lift_quality (
    stage           VARCHAR NOT NULL,
    config_hash     VARCHAR NOT NULL,
    sample_id       VARCHAR NOT NULL,
    llm_score       DOUBLE,    -- clarity + difficulty + explanation + accuracy, 0-100; NULL if none parsed
    clarity         DOUBLE,    -- 0-15
    difficulty      DOUBLE,    -- 0-25
    explanation     DOUBLE,    -- 0-25
    accuracy        DOUBLE,    -- 0-35
    response_chars  BIGINT NOT NULL,  -- characters of all assistant turns (the length score's input)
    answers         VARCHAR[],
    status          VARCHAR NOT NULL, -- ok | partial | unparseable | request_rejected
    n_turns_judged  INTEGER NOT NULL,
    n_unparseable   INTEGER NOT NULL,
    truncated       BOOLEAN NOT NULL,
    PRIMARY KEY (stage, config_hash, sample_id)
);
