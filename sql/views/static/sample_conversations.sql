-- Which conversation each sample comes from, for counting (and refusing) near-copies in a
-- selection (stages/core/conversation_keys.py, reports). Two keys per sample:
--   conversation_key: the source record's conversation id (`id`, else `conversation_id`), for
--     ShareGPT records with a trailing `_<number>` removed, because ShareGPT splits a long
--     conversation into parts `X_0`, `X_1`, ... that are one conversation (other formats keep
--     their ids whole: `identity_0` and `identity_1` stay two); prefixed by the source. A record without an
--     id is its own conversation (`sample:<sample_id>`).
--   first_turn_key: md5 of the first user turn as the model reads it (alpaca: instruction and
--     input), lower-cased with runs of white space made one space.
CREATE OR REPLACE VIEW sample_conversations AS
SELECT s.sample_id,
       coalesce(s.source || ':' || CASE WHEN s.format = 'sharegpt'
                                        THEN regexp_replace(r.record_id, '_[0-9]+$', '')
                                        ELSE r.record_id END,
                'sample:' || s.sample_id) AS conversation_key,
       md5(lower(regexp_replace(trim(CASE WHEN s.input = '' THEN s.instruction
                                          ELSE s.instruction || ' ' || s.input END),
                                '\s+', ' ', 'g'))) AS first_turn_key
FROM samples AS s,
     LATERAL (SELECT nullif(coalesce(json_extract_string(s.raw_record, '$.id'),
                                     json_extract_string(s.raw_record, '$.conversation_id')), '') AS record_id) AS r;
