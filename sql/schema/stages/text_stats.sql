-- text_stats stage: character and word counts per sample (Instruction Mining's length indicators).
CREATE TABLE IF NOT EXISTS text_stats (
    stage              VARCHAR NOT NULL,
    config_hash        VARCHAR NOT NULL,
    sample_id          VARCHAR NOT NULL,
    instruction_chars  INTEGER NOT NULL,
    input_chars        INTEGER NOT NULL,
    output_chars       INTEGER NOT NULL,
    instruction_words  INTEGER NOT NULL,
    output_words       INTEGER NOT NULL,
    conversation_chars BIGINT NOT NULL,
    n_turns            INTEGER NOT NULL,
    PRIMARY KEY (stage, config_hash, sample_id)
);
