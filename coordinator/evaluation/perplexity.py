"""Perplexity: how likely the model finds a passage, from the worker's token log-probs.

The worker scores the passage (`kind: score`) and returns the sum of its token
log-probabilities and the token count. Perplexity and NLL per token weight every token
equally across passages; bits per byte divides by the text's UTF-8 bytes instead, so it
compares models whose tokenizers differ.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from coordinator.datasets.loader import Dataset
from coordinator.evaluation.tasks import PlannedItem, Scored, TaskSpec, sample_test_items


class PerplexityTask:
    name = "perplexity"

    def __init__(self, spec: TaskSpec) -> None:
        self.spec = spec

    def plan(self, dataset: Dataset, *, limit: int | None, seed: int) -> list[PlannedItem]:
        return [PlannedItem(item_key=item.id, prompt=item.text, zero_shot=item.text,
                            reference={"bytes": len(item.text.encode())}, stop=())
                for item in sample_test_items(dataset, limit=limit, seed=seed)]

    def score_item(self, output: str, reference: dict[str, Any]
                   ) -> tuple[str | None, dict[str, Any]]:
        scored = json.loads(output)
        logprob_sum, tokens = float(scored["logprob_sum"]), int(scored["tokens"])
        if tokens < 1 or logprob_sum > 0:
            raise ValueError(f"worker returned {tokens} tokens with log-prob sum "
                             f"{logprob_sum}; expected >= 1 token and a sum <= 0")
        return None, {"logprob_sum": logprob_sum, "tokens": tokens,
                      "bytes": int(reference["bytes"])}

    def aggregate(self, items: Sequence[Scored]) -> dict[str, float]:
        tokens = sum(int(i.score["tokens"]) for i in items)
        if not tokens:
            return {}
        nll = -sum(float(i.score["logprob_sum"]) for i in items)
        return {"perplexity": math.exp(nll / tokens), "nll_per_token": nll / tokens,
                "bits_per_byte": nll / math.log(2) / sum(int(i.score["bytes"])
                                                         for i in items)}
