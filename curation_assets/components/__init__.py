from curation_assets.components.pipeline import CurationPipeline
from curation_assets.components.resources import CurationStore, LLMEndpoint

__all__ = ["CurationPipeline", "CurationStore", "LLMEndpoint"]
