from curation_assets.components.pipeline import CurationPipeline

__all__ = ["CurationPipeline"]
