"""The spend guard of an LLM stage run (YAML `llm.max_requests_per_run`, `llm.max_cost_per_run`).

Only requests that would be sent count: answers already in `llm_cache` cost nothing. A stage
first counts the requests its pending samples need (`SpendPlan`, before anything is sent) and
stops if they exceed a limit; the client then checks every batch before sending it, so re-asks
of unparseable answers and requests that depend on earlier answers never take a run past the
limit either. Cost = prompt tokens x input price + max_tokens x output price: prompt tokens are
estimated as characters / 4 plus 4 per message (no tokenizer of a remote model is available
offline), and every answer is counted at its full `max_tokens` (an upper bound).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from curation_assets.llm.endpoint import LLMConfigError

if TYPE_CHECKING:
    from curation_assets.llm.client import ChatRequest
    from curation_assets.llm.endpoint import LLMEndpointSpec

TOKEN_ESTIMATE = (
    "prompt tokens estimated as characters/4 + 4 per message; answers counted at max_tokens (an upper bound)"
)
_MESSAGE_OVERHEAD = 4  # role and separators of one chat message
_REPLY_PRIMING = 3  # the assistant header every chat template adds


class SpendLimitExceeded(LLMConfigError):
    """A run would send more requests (or cost more) than its `llm:` limits allow; nothing more is sent."""


def prompt_tokens(request: ChatRequest) -> int:
    """Estimated prompt tokens of one request: characters / 4 per message plus its framing."""
    return message_tokens(
        sum(math.ceil(len(m.get("content") or "") / 4) for m in request.messages), len(request.messages)
    )


def message_tokens(content_tokens: int, messages: int = 1) -> int:
    """Prompt tokens of `messages` chat messages holding `content_tokens` tokens of text in all."""
    return _REPLY_PRIMING + content_tokens + _MESSAGE_OVERHEAD * messages


def answer_tokens(request: ChatRequest) -> int:
    """The most tokens the answer can have (its `max_tokens`; 0 when the request sets none)."""
    return int(request.params.get("max_tokens") or 0)


@dataclass
class SpendPlan:
    """What a run would send: request count and token estimates (after the cache lookup)."""

    requests: int = 0
    prompt_tokens: int = 0
    answer_tokens: int = 0
    cached: int = 0  # first requests answered from llm_cache (free)
    samples: int = 0  # pending samples looked at
    followups: int = 0  # of `requests`: those that follow an answer of this run (later rounds, rankings)
    cost: float | None = None  # estimated, when the endpoint has prices

    def add(self, request: ChatRequest) -> None:
        self.add_tokens(prompt_tokens(request), answer_tokens(request))

    def add_tokens(self, prompt: int, answer: int) -> None:
        """One request of `prompt` estimated prompt tokens and at most `answer` answer tokens."""
        self.requests += 1
        self.prompt_tokens += prompt
        self.answer_tokens += answer


class SpendGuard:
    """The limits of one stage run (a shard gets its share) and what this run has sent so far."""

    def __init__(self, endpoint: LLMEndpointSpec, stage: str, shard: tuple[int, int] | None = None) -> None:
        self.endpoint, self.stage, self.shard = endpoint, stage, shard
        shards = shard[1] if shard else 1
        self.max_requests = (
            None if endpoint.max_requests_per_run is None else math.ceil(endpoint.max_requests_per_run / shards)
        )
        self.max_cost = None if endpoint.max_cost_per_run is None else endpoint.max_cost_per_run / shards
        self.sent = SpendPlan()  # requests admitted so far in this run

    def cost(self, plan: SpendPlan) -> float | None:
        """Estimated cost of `plan` in the currency of the prices (None without prices)."""
        e = self.endpoint
        if e.input_price_per_mtok is None or e.output_price_per_mtok is None:
            return None
        return (plan.prompt_tokens * e.input_price_per_mtok + plan.answer_tokens * e.output_price_per_mtok) / 1e6

    def check_plan(self, plan: SpendPlan) -> None:
        """Raise SpendLimitExceeded when the whole run's requests exceed a limit (nothing sent yet)."""
        self._check(plan, plan, before_any=True)

    def admit(self, requests: Sequence[ChatRequest]) -> None:
        """Count a batch about to be sent; raise SpendLimitExceeded (sending none of it) when it would
        take this run past a limit."""
        batch = SpendPlan()
        for request in requests:
            batch.add(request)
        total = SpendPlan(
            requests=self.sent.requests + batch.requests,
            prompt_tokens=self.sent.prompt_tokens + batch.prompt_tokens,
            answer_tokens=self.sent.answer_tokens + batch.answer_tokens,
        )
        self._check(total, batch, before_any=False)
        self.sent = total

    def _check(self, total: SpendPlan, batch: SpendPlan, *, before_any: bool) -> None:
        share = f" (shard {self.shard[0]}/{self.shard[1]}'s share)" if self.shard and self.shard[1] > 1 else ""
        cost = self.cost(total)
        over = []
        if self.max_requests is not None and total.requests > self.max_requests:
            over.append(f"llm.max_requests_per_run = {self.endpoint.max_requests_per_run}{share}")
        if self.max_cost is not None and cost is not None and cost > self.max_cost:
            over.append(f"llm.max_cost_per_run = {self.endpoint.max_cost_per_run:g}{share}")
        if not over:
            return
        cost_text = f", estimated cost {cost:.4f} ({TOKEN_ESTIMATE})" if cost is not None else ""
        if before_any:
            needs = (
                f"this run needs {total.requests} LLM request(s) for {total.samples} pending sample(s)"
                f"{f', {total.followups} of them following earlier answers' if total.followups else ''}"
                f"{cost_text}; {total.cached} answer(s) already in llm_cache are free and not counted"
            )
            sent = "nothing was sent"
        else:
            needs = (
                f"sending {batch.requests} more request(s) would bring this run to {total.requests}"
                f"{cost_text} (re-asks of unparseable answers and later rounds count too)"
            )
            sent = f"{self.sent.requests} request(s) were sent and their answers are in llm_cache"
        raise SpendLimitExceeded(
            f"stage {self.stage!r}: {needs}, over {' and '.join(over)}; {sent}. To go on, raise "
            f"{' / '.join(o.split(' =')[0] for o in over)} under this stage's `llm:` (null = no limit) and run "
            "it again: cached answers are not paid twice"
        )
