"""Per-sample signals of a causal LM on the response tokens, batched over padded sequences.

- mean response-token loss (cross-entropy) and perplexity = exp(loss);
- EL2N (Paul et al. 2021, "Deep Learning on a Data Diet"): ||softmax(f(x)) - onehot(y)||_2
  per token, averaged over the response tokens.

Position t predicts token t+1; positions labelled -100 (prompt, padding) are skipped. The
LM head is applied only to response positions, in chunks, so memory is bounded by
`chunk_tokens` x vocabulary rather than batch x sequence x vocabulary.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

IGNORE_INDEX = -100


@dataclass(frozen=True)
class TokenSignals:
    loss: torch.Tensor  # (batch,) mean response-token cross-entropy (nan if no response token)
    el2n: torch.Tensor  # (batch,) mean response-token EL2N (nan if no response token)
    n_tokens: torch.Tensor  # (batch,) response tokens scored


def response_token_signals(
    hidden: torch.Tensor,
    labels: torch.Tensor,
    lm_head: Callable[[torch.Tensor], torch.Tensor],
    chunk_tokens: int = 2048,
) -> TokenSignals:
    """hidden (batch, seq, d) final hidden states; labels (batch, seq) with -100 where not scored."""
    targets = labels[:, 1:]
    mask = targets != IGNORE_INDEX
    rows = mask.nonzero(as_tuple=True)[0]
    states = hidden[:, :-1][mask]
    wanted = targets[mask]
    batch = labels.shape[0]
    nll_sum = torch.zeros(batch, dtype=torch.float64, device=hidden.device)
    el2n_sum = torch.zeros(batch, dtype=torch.float64, device=hidden.device)
    for start in range(0, wanted.shape[0], chunk_tokens):
        logits = lm_head(states[start : start + chunk_tokens]).float()
        y = wanted[start : start + chunk_tokens]
        log_z = torch.logsumexp(logits, dim=-1)
        logit_y = logits.gather(-1, y.unsqueeze(-1)).squeeze(-1)
        probs = torch.softmax(logits, dim=-1)
        p_y = (logit_y - log_z).exp()
        el2n = torch.sqrt(((probs * probs).sum(-1) - 2 * p_y + 1).clamp(min=0))  # ||p - e_y||
        r = rows[start : start + chunk_tokens]
        nll_sum.index_add_(0, r, (log_z - logit_y).double())
        el2n_sum.index_add_(0, r, el2n.double())
    counts = mask.sum(-1)
    denominator = counts.clamp(min=1).double()
    empty = counts == 0
    return TokenSignals(
        (nll_sum / denominator).masked_fill(empty, float("nan")),
        (el2n_sum / denominator).masked_fill(empty, float("nan")),
        counts,
    )


def decoder_and_head(model: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The transformer body and the LM head of a causal LM (a peft model keeps LoRA layers inside)."""
    hf_model: Any = model  # a transformers PreTrainedModel or a peft wrapper; torch types attributes as Tensor | Module
    causal_lm = hf_model.get_base_model() if hasattr(hf_model, "get_base_model") else hf_model
    return causal_lm.base_model, causal_lm.get_output_embeddings()


def forward_signals(model: torch.nn.Module, batch: dict[str, torch.Tensor], chunk_tokens: int = 2048) -> TokenSignals:
    """Run the decoder once and score response tokens (no full-vocabulary logits for the prompt)."""
    decoder, head = decoder_and_head(model)
    hidden = decoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    return response_token_signals(hidden, batch["labels"], head, chunk_tokens)
