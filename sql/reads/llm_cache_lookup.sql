-- Cached answers for a list of request hashes. Parameter: $hashes (VARCHAR[]).
SELECT request_hash, response, finish_reason, prompt_tokens, completion_tokens, latency_s
FROM llm_cache
WHERE request_hash IN (SELECT unnest($hashes));
