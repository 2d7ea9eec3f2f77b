-- alpagasus stage: an LLM's 0-5 accuracy rating of each response (AlpaGasus).
CREATE TABLE IF NOT EXISTS alpagasus (
    stage           VARCHAR NOT NULL,
    config_hash     VARCHAR NOT NULL,
    sample_id       VARCHAR NOT NULL,
    score           DOUBLE,        -- mean over rated turns of the parsed scores; NULL if none parsed
    min_score       DOUBLE,
    turn_scores     DOUBLE[],      -- per rated turn; NULL where the answer did not parse
    answers         VARCHAR[],     -- the judge's last answer per turn (score line + explanation)
    status          VARCHAR NOT NULL,  -- ok | partial | unparseable | request_rejected
    n_turns_judged  INTEGER NOT NULL,
    n_unparseable   INTEGER NOT NULL,
    truncated       BOOLEAN NOT NULL,  -- some text was cut to field_chars / context_chars
    PRIMARY KEY (stage, config_hash, sample_id)
);
