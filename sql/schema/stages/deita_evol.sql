-- deita_evol stage: DEITA Evol-Complexity / Evol-Quality labels, one row per sample, dimension
-- and variant (0 = the sample itself, k = the k-th evolution step).
CREATE TABLE IF NOT EXISTS deita_evol (
    stage        VARCHAR NOT NULL,
    config_hash  VARCHAR NOT NULL,
    sample_id    VARCHAR NOT NULL,
    dimension    VARCHAR NOT NULL,  -- complexity | quality
    variant      INTEGER NOT NULL,
    operation    VARCHAR NOT NULL,  -- seed | add_constraints | deepen | ... | helpfulness | depth | ...
    instruction  VARCHAR NOT NULL,  -- complexity: the evolved instruction; quality: the seed instruction
    response     VARCHAR,           -- quality: the evolved response; complexity: the seed response (variant 0)
    score        DOUBLE,            -- 1..M+1 from the LLM's ranking of all variants; NULL if it did not parse
    status       VARCHAR NOT NULL,  -- ok | chain_broken | too_few_variants | unparseable | request_rejected
    ranking_answer VARCHAR,         -- the LLM's ranking answer the scores were parsed from
    PRIMARY KEY (stage, config_hash, sample_id, dimension, variant)
);
