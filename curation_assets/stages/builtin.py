"""Import every built-in stage kind so it registers itself."""

from curation_assets.stages import (  # noqa: F401
    alpagasus,
    deita_evol,
    grad_features,
    less_selection,
    lift,
    lora_warmup,
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
