"""curation_assets: declarative curation of LLM instruction-tuning data as Dagster assets.

`CurationPipeline` is imported on first use (PEP 562), so the model and method layers
(curation_assets.models, curation_assets.methods) import without Dagster or DuckDB, e.g. on
a GPU box that only has PyTorch (`python -m bench.run --only less --only influence --only lm`;
see docs/benchmarks.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from curation_assets.components.pipeline import CurationPipeline

__all__ = ["CurationPipeline"]


def __getattr__(name: str) -> Any:
    if name == "CurationPipeline":
        from curation_assets.components.pipeline import CurationPipeline

        return CurationPipeline
    raise AttributeError(f"module 'curation_assets' has no attribute {name!r}")


def __dir__() -> list[str]:
    """Lists `CurationPipeline` too: `dg` finds component types through dir() of this module."""
    return sorted({*globals(), *__all__})
