"""Which shard a sample belongs to: the first 32 bits of md5(sample_id) modulo the shard count
(the same expression runs in DuckDB, sql/reads/pending_in_shard.sql)."""

from __future__ import annotations

import hashlib


def shard_of(sample_id: str, shard_count: int) -> int:
    return int(hashlib.md5(sample_id.encode("utf-8")).hexdigest()[:8], 16) % shard_count
