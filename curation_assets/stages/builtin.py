"""Import every built-in stage kind so it registers itself (one module per kind, by family)."""

from curation_assets.stages.diversity import (  # noqa: F401
    deft_ucs,
    kcenter_greedy,
    kmeans_coreset,
    lift_variance,
    minhash_dedup,
    near_dedup,
)
from curation_assets.stages.generic import embedding, quantile_window, random, text_stats, top_score  # noqa: F401
from curation_assets.stages.influence import (  # noqa: F401
    grad_features,
    influence_distillation,
    jvp_embeddings,
    less,
    lora_warmup,
    target_similarity,
)
from curation_assets.stages.llm_judges import (  # noqa: F401
    alpagasus,
    alpagasus_threshold,
    lift_expand,
    lift_quality,
    lift_top,
)
from curation_assets.stages.lm_signals import (  # noqa: F401
    data_diet_dynamic,
    el2n,
    grand,
    lm_embedding,
    lm_loss,
    lobass,
)
from curation_assets.stages.trained_scorers import (  # noqa: F401
    deita_evol,
    deita_repr_filter,
    deita_scorer_train,
    deita_scores,
    instruction_mining_fit,
    instruction_mining_indicators,
    mods,
    reward_scores,
)
