-- Which conversation each sample comes from, for counting (and refusing) near-copies in a
-- selection (stages/conversation_keys.py, reports). Two keys per sample:
--   conversation_key: the source record's conversation id (`id`, else `conversation_id`) with a
--     trailing `_<number>` removed, because ShareGPT splits a long conversation into parts
--     `X_0`, `X_1`, ... that are one conversation; prefixed by the source. A record without an
--     id is its own conversation (`sample:<sample_id>`).
--   first_turn_key: md5 of the first user turn as the model reads it (alpaca: instruction and
--     input), lower-cased with runs of white space made one space.
CREATE OR REPLACE VIEW sample_conversations AS
SELECT s.sample_id,
       coalesce(s.source || ':' || regexp_replace(
                    nullif(coalesce(json_extract_string(s.raw_record, '$.id'),
                                    json_extract_string(s.raw_record, '$.conversation_id')), ''),
                    '_[0-9]+$', ''),
                'sample:' || s.sample_id) AS conversation_key,
       md5(lower(regexp_replace(trim(CASE WHEN s.input = '' THEN s.instruction
                                          ELSE s.instruction || ' ' || s.input END),
                                '\s+', ' ', 'g'))) AS first_turn_key
FROM samples AS s;
