from curation_assets.llm.conversation import TRUNCATION_MARK, judged_turns


def test_single_turn_keeps_alpaca_input_separate():
    messages = [{"role": "user", "content": "Sum these\n\n1 2"}, {"role": "assistant", "content": "3"}]
    turns = judged_turns(messages, "Sum these", "1 2", "3")
    assert [(t.instruction, t.input, t.response) for t in turns] == [("Sum these", "1 2", "3")]


def test_multi_turn_rates_each_reply_with_earlier_context():
    messages = [
        {"role": "system", "content": "be nice"},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4"},
    ]
    turns = judged_turns(messages, "hi", "", "hello")
    assert [(t.instruction, t.input, t.response) for t in turns] == [
        ("hi", "", "hello"),
        ("2+2?", "User: hi\nAssistant: hello", "4"),
    ]
    assert [t.response for t in judged_turns(messages, "hi", "", "hello", which="last")] == ["4"]
    assert [t.response for t in judged_turns(messages, "hi", "", "hello", which="first")] == ["hello"]


def test_long_text_is_cut_and_flagged():
    messages = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "x" * 500}]
    (turn,) = judged_turns(messages, "q", "", "x" * 500, field_chars=100)
    assert turn.truncated and turn.response == "x" * 100 + TRUNCATION_MARK
