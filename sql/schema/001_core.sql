-- Core tables of a curation_assets DuckDB file. Applied idempotently on every run.

-- One row per normalised sample; sample_id is a stable hash of the normalised conversation.
CREATE TABLE IF NOT EXISTS samples (
    sample_id    VARCHAR PRIMARY KEY,
    source       VARCHAR NOT NULL,      -- source that first produced this sample
    format       VARCHAR NOT NULL,      -- alpaca | sharegpt | messages | custom | generated
    instruction  VARCHAR NOT NULL,      -- first user turn (alpaca: instruction)
    input        VARCHAR NOT NULL,      -- alpaca input, '' otherwise
    output       VARCHAR NOT NULL,      -- first assistant turn (alpaca: output)
    messages     STRUCT(role VARCHAR, content VARCHAR)[] NOT NULL,  -- full conversation
    n_turns      INTEGER NOT NULL,      -- number of assistant turns
    parent_id    VARCHAR,               -- for generated samples (LIFT expansion)
    raw_record   JSON,                  -- first original record, as read
    first_seen   TIMESTAMP NOT NULL,
    active       BOOLEAN NOT NULL DEFAULT TRUE
);

-- Provenance: which source holds which sample, and how many exact duplicates it had there.
CREATE TABLE IF NOT EXISTS source_samples (
    source           VARCHAR NOT NULL,
    sample_id        VARCHAR NOT NULL,
    n_records        INTEGER NOT NULL,  -- records in the source that normalise to this sample
    first_record_no  BIGINT NOT NULL,
    first_seen       TIMESTAMP NOT NULL,
    last_seen        TIMESTAMP NOT NULL,
    active           BOOLEAN NOT NULL,  -- false once the sample left the source
    PRIMARY KEY (source, sample_id)
);

-- Records that could not be read or normalised. Replaced on each ingest of the source.
CREATE TABLE IF NOT EXISTS rejected_samples (
    source       VARCHAR NOT NULL,
    source_file  VARCHAR NOT NULL,
    record_no    BIGINT NOT NULL,       -- 1-based: line number for JSON Lines, element number otherwise
    location     VARCHAR NOT NULL,      -- human readable: "line 17", "element 4 (byte 1234)"
    reason       VARCHAR NOT NULL,
    raw_record   VARCHAR NOT NULL,
    rejected_at  TIMESTAMP NOT NULL,
    PRIMARY KEY (source, record_no)
);

-- One row per materialisation of any asset of a pipeline.
CREATE TABLE IF NOT EXISTS stage_runs (
    stage_run_id    VARCHAR PRIMARY KEY,
    pipeline        VARCHAR NOT NULL,
    stage           VARCHAR NOT NULL,
    kind            VARCHAR NOT NULL,
    config          JSON NOT NULL,
    config_hash     VARCHAR NOT NULL,
    code_version    VARCHAR NOT NULL,
    dagster_run_id  VARCHAR,
    rows_in         BIGINT NOT NULL,
    rows_out        BIGINT NOT NULL,
    seconds         DOUBLE NOT NULL,
    device          VARCHAR NOT NULL,
    stats           JSON NOT NULL,      -- kind-specific counts (records read, duplicates, ...)
    started_at      TIMESTAMP NOT NULL,
    finished_at     TIMESTAMP NOT NULL
);

-- Members of every selection, replaced whole on each materialisation of the selection.
CREATE TABLE IF NOT EXISTS selections (
    selection    VARCHAR NOT NULL,
    sample_id    VARCHAR NOT NULL,
    rank         INTEGER NOT NULL,      -- 1 = chosen first / best
    score        DOUBLE,                -- the score or weight that ranked it, when there is one
    config_hash  VARCHAR NOT NULL,
    selected_at  TIMESTAMP NOT NULL,
    PRIMARY KEY (selection, sample_id)
);

-- Per-member (or per-rejected-candidate) details of selections that have them: cluster,
-- role (easy/hard/base/kcenter/duplicate), a related sample (the kept sample a duplicate
-- repeats) and a value (distance, similarity). Replaced with the selection.
CREATE TABLE IF NOT EXISTS selection_details (
    selection    VARCHAR NOT NULL,
    sample_id    VARCHAR NOT NULL,
    role         VARCHAR NOT NULL,
    cluster      INTEGER,
    related_id   VARCHAR,
    value        DOUBLE,
    PRIMARY KEY (selection, sample_id)
);
