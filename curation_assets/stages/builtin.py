"""Import every built-in stage kind so it registers itself."""

from curation_assets.stages import diversity, embedding, random_selection, text_stats, top_score  # noqa: F401
