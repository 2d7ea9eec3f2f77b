-- Pending samples of one shard: the first 32 bits of md5(sample_id) modulo $shard_count equal
-- $shard_index (methods/sharding.py computes the same in Python). The pending query is filled in below.
SELECT p.*
FROM ({pending}) AS p
WHERE ('0x' || substr(md5(p.sample_id), 1, 8))::UBIGINT % $shard_count = $shard_index
ORDER BY p.sample_id;
