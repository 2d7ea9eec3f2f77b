import pyarrow as pa

from curation_assets.methods.text_stats import text_length_stats

MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])


def test_counts_match_python_reference():
    rows = [
        {
            "sample_id": "a",
            "instruction": "Say  hi\tnow",
            "input": "",
            "output": "héllo wörld !",
            "messages": [
                {"role": "user", "content": "Say  hi\tnow"},
                {"role": "assistant", "content": "héllo wörld !"},
            ],
            "n_turns": 1,
        },
        {
            "sample_id": "b",
            "instruction": "",
            "input": "ctx",
            "output": "",
            "messages": [
                {"role": "system", "content": "sys"},
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": "a1"},
                {"role": "user", "content": "q2"},
                {"role": "assistant", "content": "answer two"},
            ],
            "n_turns": 2,
        },
    ]
    schema = pa.schema(
        [
            ("sample_id", pa.string()),
            ("instruction", pa.string()),
            ("input", pa.string()),
            ("output", pa.string()),
            ("messages", pa.list_(MESSAGE)),
            ("n_turns", pa.int32()),
        ]
    )
    stats = text_length_stats(pa.Table.from_pylist(rows, schema=schema)).to_pylist()
    for row, got in zip(rows, stats):
        assert got["sample_id"] == row["sample_id"]
        assert got["instruction_chars"] == len(row["instruction"])
        assert got["input_chars"] == len(row["input"])
        assert got["output_chars"] == len(row["output"])
        assert got["instruction_words"] == len(row["instruction"].split())
        assert got["output_words"] == len(row["output"].split())
        assert got["conversation_chars"] == sum(len(m["content"]) for m in row["messages"])
        assert got["n_turns"] == row["n_turns"]
