-- Every active sample's conversation, in sample_id order: the full-pool fine-tune and the pool
-- token-matched random subsets are drawn from.
SELECT s.sample_id, s.messages
FROM samples AS s
WHERE s.active
ORDER BY s.sample_id;
