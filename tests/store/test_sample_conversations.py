"""The `sample_conversations` view: ShareGPT part ids `X_N` are one conversation; other formats
keep their ids whole (an alpaca set with ids `identity_0`, `identity_1` holds two)."""

from curation_assets.store import DuckDBStore


def test_only_sharegpt_part_suffixes_join_conversations(tmp_path):
    store = DuckDBStore(tmp_path / "x.duckdb")
    store.ensure_schema()
    rows = [
        ("a", "sharegpt", '{"id": "saga_0"}', "Hi"),
        ("b", "sharegpt", '{"id": "saga_1"}', "Go on"),
        ("c", "alpaca", '{"id": "identity_0"}', "Who are you?"),
        ("d", "alpaca", '{"id": "identity_1"}', "What is your name?"),
        ("e", "alpaca", '{"instruction": "x"}', "  WHO are\nyou? "),
    ]
    with store.transaction() as con:
        for sample_id, fmt, raw, instruction in rows:
            con.execute(
                "INSERT INTO samples (sample_id, source, format, instruction, input, output, messages, "
                "n_turns, raw_record, first_seen) VALUES (?, 'src', ?, ?, '', 'ok', [], 1, ?, now())",
                [sample_id, fmt, instruction, raw],
            )
    with store.reader() as con:
        keys = dict(con.execute("SELECT sample_id, conversation_key FROM sample_conversations").fetchall())
        turns = dict(con.execute("SELECT sample_id, first_turn_key FROM sample_conversations").fetchall())
    assert keys == {"a": "src:saga", "b": "src:saga", "c": "src:identity_0", "d": "src:identity_1", "e": "sample:e"}
    assert turns["c"] == turns["e"] != turns["d"]
