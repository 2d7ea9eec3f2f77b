-- Record requests that failed after every retry; `new_llm_failures` is registered by the caller.
INSERT INTO llm_failures
SELECT pipeline, stage, request_hash, sample_id, error, attempts, failed_at
FROM new_llm_failures;
