-- Append answers that just arrived; `new_llm_answers` is an Arrow table registered by the caller.
-- An anti-join, not ON CONFLICT, so the same text runs on a DuckLake (no PRIMARY KEY there): a hash
-- already cached keeps its row; of one hash twice in a batch, the earlier answer is kept.
INSERT INTO llm_cache
SELECT n.request_hash, n.model, n.request::JSON, n.response, n.finish_reason, n.prompt_tokens,
       n.completion_tokens, n.latency_s, n.created_at
FROM new_llm_answers AS n
ANTI JOIN llm_cache AS cached ON cached.request_hash = n.request_hash
QUALIFY row_number() OVER (PARTITION BY n.request_hash ORDER BY n.created_at) = 1;
