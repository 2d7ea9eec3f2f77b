"""Import every built-in stage kind so it registers itself."""

from curation_assets.stages import (  # noqa: F401
    alpagasus,
    data_diet,
    deita_evol,
    diversity,
    early_training,
    embedding,
    grad_features,
    influence_distillation,
    jvp_embeddings,
    less_selection,
    lift,
    lm_loss,
    lobass,
    lora_warmup,
    quantile_window,
    random_selection,
    text_stats,
    top_score,
)
