"""curation_assets: declarative curation of LLM instruction-tuning data as Dagster assets."""

from curation_assets.components.pipeline import CurationPipeline

__all__ = ["CurationPipeline"]
