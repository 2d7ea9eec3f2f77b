"""Device/dtype overrides, packaged-file copies, and the model layer importing without Dagster."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from curation_assets.methods.projection import DenseRademacherProjector
from curation_assets.models import device as device_module
from curation_assets.models.chat_format import EncodedSample, collate
from curation_assets.sources.packaged import PACKAGED, packaged_file


@pytest.fixture
def fresh_device(monkeypatch: pytest.MonkeyPatch):
    device_module.compute_device.cache_clear()
    yield monkeypatch
    device_module.compute_device.cache_clear()


def test_dtype_override(fresh_device: pytest.MonkeyPatch) -> None:
    fresh_device.setenv("CURATION_DEVICE", "cpu")
    fresh_device.setenv("CURATION_DTYPE", "bfloat16")
    chosen = device_module.compute_device()
    assert (chosen.name, chosen.torch_dtype) == ("cpu", torch.bfloat16)


def test_bad_dtype_is_named(fresh_device: pytest.MonkeyPatch) -> None:
    fresh_device.setenv("CURATION_DTYPE", "float16")
    with pytest.raises(ValueError, match="CURATION_DTYPE='float16'"):
        device_module.compute_device()


def test_packaged_copy_is_used_when_present(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    copy = tmp_path / PACKAGED["gsm8k"].relative_file
    copy.parent.mkdir(parents=True)
    copy.write_text('{"question": "q", "answer": "a"}\n')
    monkeypatch.setenv("CURATION_PACKAGED_DIR", str(tmp_path))
    assert packaged_file("gsm8k") == copy
    monkeypatch.setenv("CURATION_PACKAGED_DIR", str(tmp_path / "elsewhere"))
    assert packaged_file("gsm8k") != copy  # no copy there: the installed package


def test_collate_moves_to_the_device() -> None:
    batch = collate([EncodedSample([5, 6, 7], [-100, 6, 7], False), EncodedSample([5], [5], False)], 0, "meta")
    assert {t.device.type for t in batch.values()} == {"meta"}
    assert tuple(batch["input_ids"].shape) == (2, 3)


def test_dense_projection_draws_on_cpu_unless_asked() -> None:
    """Features must not depend on the device: device_rng only changes anything off the CPU."""
    x = torch.randn(3, 1000)
    assert torch.equal(
        DenseRademacherProjector(1000, 64, seed=3, block_rows=256).project(x),
        DenseRademacherProjector(1000, 64, seed=3, block_rows=256, device_rng=True).project(x),
    )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_device_rng_projection_keeps_norms_on_gpu() -> None:
    x = torch.randn(8, 200_000, device="cuda")
    y = DenseRademacherProjector(200_000, 4096, seed=0, block_rows=65_536, device_rng=True).project(x)
    ratio = y.norm(dim=1) / x.norm(dim=1)
    assert torch.all((ratio - 1).abs() < 0.1)  # JL: relative error ~ 1/sqrt(4096) per vector


def test_model_layer_imports_without_dagster() -> None:
    """bench/ runs the model benchmarks on a GPU box that has PyTorch but not Dagster/DuckDB."""
    code = (
        "import sys, curation_assets.models.gradients, curation_assets.models.jvp, "
        "curation_assets.models.lora, curation_assets.methods.less, curation_assets.methods.projection; "
        "print(sorted(m for m in ('dagster', 'duckdb') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
