-- deita_scores stage: DEITA complexity and quality of each sample and its evol score.
CREATE TABLE IF NOT EXISTS deita_scores (
    stage            VARCHAR NOT NULL,
    config_hash      VARCHAR NOT NULL,
    sample_id        VARCHAR NOT NULL,
    complexity       DOUBLE,     -- mean over the turns that got a score
    quality          DOUBLE,     -- mean over the turns that got a score
    score            DOUBLE,     -- sum over turns of complexity x quality; NULL if any turn failed
    turn_complexity  DOUBLE[],   -- per turn; NULL where scoring failed
    turn_quality     DOUBLE[],
    n_turns          INTEGER NOT NULL,
    n_failed         INTEGER NOT NULL,  -- turns lacking a complexity or a quality
    status           VARCHAR NOT NULL,  -- ok | partial | failed
    failure          VARCHAR,           -- why turns failed
    truncated        BOOLEAN NOT NULL,  -- a prompt or text was cut to the scorer's length
    PRIMARY KEY (stage, config_hash, sample_id)
);
