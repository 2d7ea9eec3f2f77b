-- Conversation and first-user-turn keys (views/static/sample_conversations.sql), as 64-bit
-- hashes, of the samples in the registered table `wanted_samples` (position, sample_id), in
-- its order; `missing` marks a sample absent from `samples`.
SELECT w.position, k.sample_id IS NULL AS missing,
       hash(k.conversation_key) AS conversation, hash(k.first_turn_key) AS first_turn
FROM wanted_samples AS w
LEFT JOIN sample_conversations AS k USING (sample_id)
ORDER BY w.position;
