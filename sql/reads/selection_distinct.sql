-- How many distinct conversations and first user turns a selection (parameter $selection) holds.
SELECT count(*) AS members,
       count(DISTINCT k.conversation_key) AS distinct_conversations,
       count(DISTINCT k.first_turn_key) AS distinct_first_turns
FROM selections AS m
JOIN sample_conversations AS k USING (sample_id)
WHERE m.selection = $selection;
