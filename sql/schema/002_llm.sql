-- LLM request cache and failed-request log, shared by every LLM-judged stage.
-- A row is written as soon as its answer arrives, so a crashed or cancelled run never pays twice.

CREATE TABLE IF NOT EXISTS llm_cache (
    request_hash       VARCHAR PRIMARY KEY,  -- sha256 of model + messages + parameters (+ retry attempt)
    model              VARCHAR NOT NULL,
    request            JSON NOT NULL,        -- messages and parameters as sent (never the API key)
    response           VARCHAR NOT NULL,     -- the assistant message text
    finish_reason      VARCHAR,
    prompt_tokens      INTEGER,
    completion_tokens  INTEGER,
    latency_s          DOUBLE NOT NULL,
    created_at         TIMESTAMP NOT NULL
);

-- Requests that still failed after every retry (the stage fails; a re-run retries them).
CREATE TABLE IF NOT EXISTS llm_failures (
    pipeline      VARCHAR NOT NULL,
    stage         VARCHAR NOT NULL,
    request_hash  VARCHAR NOT NULL,
    sample_id     VARCHAR,
    error         VARCHAR NOT NULL,
    attempts      INTEGER NOT NULL,
    failed_at     TIMESTAMP NOT NULL
);
