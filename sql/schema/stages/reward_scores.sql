-- reward_scores stage: a reward model's score of each (instruction + input, response) (MoDS quality).
CREATE TABLE IF NOT EXISTS reward_scores (
    stage         VARCHAR NOT NULL,
    config_hash   VARCHAR NOT NULL,
    sample_id     VARCHAR NOT NULL,
    reward        DOUBLE,     -- mean over the turns that got a score
    min_reward    DOUBLE,
    turn_rewards  DOUBLE[],   -- per scored turn; NULL where scoring failed
    n_turns       INTEGER NOT NULL,
    n_failed      INTEGER NOT NULL,
    status        VARCHAR NOT NULL,  -- ok | partial | failed
    failure       VARCHAR,
    truncated     BOOLEAN NOT NULL,  -- a pair was cut to max_length (or the embedder's length)
    PRIMARY KEY (stage, config_hash, sample_id)
);
