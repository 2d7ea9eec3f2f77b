-- OpenAI Batch API jobs of LLM stages in `llm mode: batch` (curation_assets/llm/batch.py).
-- A row is written before the batch is created (status submitting, then submitted with the id): a run killed after that
-- resumes polling the same batch instead of submitting (and paying for) its requests again.

CREATE TABLE IF NOT EXISTS llm_batches (
    batch_id        VARCHAR PRIMARY KEY,  -- the provider's batch id
    pipeline        VARCHAR NOT NULL,
    stage           VARCHAR NOT NULL,
    config_hash     VARCHAR NOT NULL,     -- the stage's config hash when it was submitted
    shard           VARCHAR NOT NULL,     -- 'index/count', or '' for an unsharded run
    base_url        VARCHAR NOT NULL,     -- where it was submitted (credentials masked)
    model           VARCHAR NOT NULL,
    input_file_id   VARCHAR NOT NULL,
    request_hashes  VARCHAR[] NOT NULL,   -- llm_cache request hashes = the lines' custom_id
    status          VARCHAR NOT NULL,     -- submitting | submitted | downloaded | failed | lost; see `detail`
    detail          VARCHAR,
    submitted_at    TIMESTAMP NOT NULL,
    finished_at     TIMESTAMP
);
