"""Import every built-in stage kind so it registers itself."""

from curation_assets.stages import (  # noqa: F401
    alpagasus,
    deita_evol,
    lift,
    data_diet,
    diversity,
    early_training,
    embedding,
    lm_loss,
    lobass,
    quantile_window,
    random_selection,
    text_stats,
    top_score,
)
