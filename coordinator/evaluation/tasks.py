"""The task registry: how each evaluation task turns a dataset into prompts and scores outputs.

A task plans work items from a dataset (rendered prompt + reference), scores one model
output on the coordinator, and aggregates scored items into its metrics. Lookups of
unknown tasks suggest the nearest names.
"""

from __future__ import annotations

import difflib
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from coordinator.datasets.loader import Dataset
from coordinator.errors import JobSpecError
from coordinator.evaluation import classification


@dataclass(frozen=True)
class PlannedItem:
    item_key: str
    prompt: str
    reference: dict[str, Any]
    stop: tuple[str, ...]


@dataclass(frozen=True)
class MetricInfo:
    name: str
    higher_is_better: bool
    aggregation: str


class Task(Protocol):
    name: str
    metrics: tuple[MetricInfo, ...]

    def plan(self, dataset: Dataset, *, limit: int | None, seed: int) -> list[PlannedItem]: ...

    def score_item(self, output: str, reference: dict[str, Any]
                   ) -> tuple[str | None, dict[str, Any]]: ...

    def aggregate(self, scored: Sequence[tuple[str | None, dict[str, Any]]]
                  ) -> dict[str, float]: ...


class ClassificationTask:
    """Classification with the dataset's own labels; few-shot prompt from the train split."""

    name = classification.TASK
    metrics: tuple[MetricInfo, ...] = (
        MetricInfo("accuracy", True, "mean"),
        MetricInfo("macro_f1", True, "macro-F1 over the dataset's labels"),
        MetricInfo("invalid_rate", False, "mean"),
    )

    def plan(self, dataset: Dataset, *, limit: int | None, seed: int) -> list[PlannedItem]:
        examples = dataset.split("train")
        items = list(dataset.split("test"))
        if limit is not None and limit < len(items):
            items = random.Random(seed).sample(items, limit)
        labels = sorted(dataset.labels)
        return [
            PlannedItem(
                item_key=item.id,
                prompt=classification.render_prompt(labels=dataset.labels, examples=examples,
                                                    text=item.text),
                reference={"label": item.label, "labels": labels},
                stop=classification.STOP,
            )
            for item in items
        ]

    def score_item(self, output: str, reference: dict[str, Any]
                   ) -> tuple[str | None, dict[str, Any]]:
        predicted = classification.parse_label(output, reference["labels"])
        return predicted, {"correct": predicted == reference["label"],
                           "valid": predicted is not None}

    def aggregate(self, scored: Sequence[tuple[str | None, dict[str, Any]]]
                  ) -> dict[str, float]:
        if not scored:
            return {}
        labels = scored[0][1]["labels"]
        scores = classification.score(
            references=[ref["label"] for _, ref in scored],
            predictions=[pred for pred, _ in scored], labels=labels)
        return {"accuracy": scores.accuracy, "macro_f1": scores.macro_f1,
                "invalid_rate": scores.invalid_rate}


TASKS: dict[str, Task] = {t.name: t for t in (ClassificationTask(),)}
PLANNED_TASKS = ("translation", "ner", "summarization", "rag")


def get_task(name: str) -> Task:
    """The registered task called `name`; JobSpecError naming the nearest ones otherwise."""
    task = TASKS.get(name)
    if task is not None:
        return task
    if name in PLANNED_TASKS:
        raise JobSpecError(f"task '{name}' is not available yet; available: "
                           f"{', '.join(sorted(TASKS))}")
    near = difflib.get_close_matches(name, list(TASKS), n=3)
    hint = f"; did you mean {', '.join(near)}?" if near else ""
    raise JobSpecError(f"unknown task '{name}'{hint} (available: {', '.join(sorted(TASKS))})")
