-- Append answers that just arrived; `new_llm_answers` is an Arrow table registered by the caller.
INSERT INTO llm_cache
SELECT request_hash, model, request::JSON, response, finish_reason, prompt_tokens, completion_tokens,
       latency_s, created_at
FROM new_llm_answers
ON CONFLICT (request_hash) DO NOTHING;
