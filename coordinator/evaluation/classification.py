"""Classification task: few-shot prompt for a base model, output parsing and scoring.

The prompt is plain text (no chat template) rendered from ``task_specs/classification.yaml``,
ending in ``Label:`` so a base model continues with a label and stops at the newline.
:func:`parse_label` maps the raw continuation to one allowed label or ``None`` (invalid);
:func:`score` computes accuracy, macro-F1 and the invalid rate.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sklearn.metrics import f1_score

from coordinator.datasets.loader import Dataset, DatasetItem
from coordinator.evaluation.tasks import (
    PlannedItem,
    Scored,
    TaskSpec,
    load_spec,
    one_line,
    sample_test_items,
)

TASK = "classification"
INVALID = "__invalid__"


def render_prompt(*, labels: Mapping[str, str], examples: Sequence[DatasetItem], text: str) -> str:
    """Few-shot prompt: instruction with labels, ``examples``, then ``Message: <text>\\nLabel:``."""
    if not labels:
        raise ValueError("render_prompt needs at least one label")
    prompt = load_spec(TASK).prompt
    lines = []
    for label, description in labels.items():
        description = one_line(description)
        lines.append(f"- {label}: {description}" if description else f"- {label}")
    parts = [prompt.instruction.format(labels="\n".join(lines))]
    for example in examples:
        if example.label not in labels:
            raise ValueError(
                f"example {example.id!r} has label {example.label!r}, which is not one of "
                f"{', '.join(labels)}"
            )
        parts.append(prompt.example.format(text=one_line(example.text), label=example.label))
    parts.append(prompt.query.format(text=one_line(text)))
    return "".join(parts)


def _normalise(text: str) -> str:
    return unicodedata.normalize("NFKC", text).casefold()


def _is_edge_junk(char: str) -> bool:
    # whitespace, punctuation (quotes, dots, brackets, «», “”, 。), symbols (`, *, $) and controls
    return char.isspace() or unicodedata.category(char)[0] in "PSZC"


def _strip_junk(text: str) -> str:
    start, end = 0, len(text)
    while start < end and _is_edge_junk(text[start]):
        start += 1
    while end > start and _is_edge_junk(text[end - 1]):
        end -= 1
    return text[start:end]


def parse_label(output: str, labels: Iterable[str]) -> str | None:
    """Map raw model output to one allowed label, or ``None`` if it names none.

    Only the first non-blank line counts (a base model may ramble on with invented examples).
    Comparison is case-insensitive after Unicode NFKC normalisation. An exact match after
    stripping whitespace, quotes and punctuation wins; otherwise the label occurring earliest
    as a whole word is returned (the longer label on a tie).
    """
    canonical: dict[str, str] = {}
    for label in labels:
        key = _normalise(label).strip()
        if not key:
            raise ValueError("labels must be non-empty strings")
        if key in canonical and canonical[key] != label:
            raise ValueError(f"labels {canonical[key]!r} and {label!r} differ only in case")
        canonical[key] = label
    if not canonical:
        raise ValueError("parse_label needs at least one allowed label")

    first_line = _normalise(next((line for line in output.splitlines() if line.strip()), ""))
    for candidate_text in (first_line.strip(), _strip_junk(first_line)):
        if candidate_text in canonical:
            return canonical[candidate_text]

    best: tuple[int, int, str] | None = None  # (start, -length, label)
    for key, label in canonical.items():
        match = re.search(rf"(?<!\w){re.escape(key)}(?!\w)", first_line)
        if match is not None:
            candidate = (match.start(), -len(key), label)
            if best is None or candidate < best:
                best = candidate
    return best[2] if best is not None else None


@dataclass(frozen=True)
class ClassificationScores:
    """Scores over ``n`` items; all rates are in [0, 1]."""

    n: int
    accuracy: float
    macro_f1: float
    invalid_rate: float


def score(
    *,
    references: Sequence[str],
    predictions: Sequence[str | None],
    labels: Sequence[str],
) -> ClassificationScores:
    """Accuracy, macro-F1 over ``labels`` and invalid rate; ``None`` predictions count wrong.

    Macro-F1 averages per-label F1 over every declared label (a label with no support and no
    predictions scores 0). Invalid predictions are mapped to :data:`INVALID`, which is never a
    label, so they only ever lower recall.
    """
    if len(references) != len(predictions):
        raise ValueError(
            f"references and predictions differ in length: {len(references)} != {len(predictions)}"
        )
    if not references:
        raise ValueError("cannot score an empty set: references and predictions are empty")
    label_list = list(labels)
    if not label_list:
        raise ValueError("score needs at least one label")
    if INVALID in label_list:
        raise ValueError(f"{INVALID!r} is reserved for invalid predictions; rename that label")
    allowed = set(label_list)
    unknown_refs = sorted(set(references) - allowed)
    if unknown_refs:
        raise ValueError(f"references contain labels not in labels: {unknown_refs}")
    unknown_preds = sorted({p for p in predictions if p is not None} - allowed)
    if unknown_preds:
        raise ValueError(
            f"predictions contain labels not in labels: {unknown_preds}; "
            f"use parse_label() and None for invalid outputs"
        )

    n = len(references)
    mapped = [INVALID if p is None else p for p in predictions]
    correct = sum(1 for ref, pred in zip(references, predictions, strict=True) if ref == pred)
    invalid = sum(1 for p in predictions if p is None)
    macro = f1_score(list(references), mapped, labels=label_list, average="macro", zero_division=0)
    return ClassificationScores(
        n=n,
        accuracy=correct / n,
        macro_f1=float(macro),
        invalid_rate=invalid / n,
    )


class ClassificationTask:
    """Classification with the dataset's own labels; few-shot prompt from the train split."""

    name = TASK

    def __init__(self, spec: TaskSpec) -> None:
        self.spec = spec

    def plan(self, dataset: Dataset, *, limit: int | None, seed: int) -> list[PlannedItem]:
        examples = dataset.split("train")
        labels = sorted(dataset.labels)
        return [
            PlannedItem(
                item_key=item.id,
                prompt=render_prompt(labels=dataset.labels, examples=examples, text=item.text),
                reference={"label": item.label, "labels": labels},
                stop=self.spec.stop,
                zero_shot=render_prompt(labels=dataset.labels, examples=[], text=item.text),
            )
            for item in sample_test_items(dataset, limit=limit, seed=seed)
        ]

    def score_item(self, output: str, reference: dict[str, Any]
                   ) -> tuple[str | None, dict[str, Any]]:
        predicted = parse_label(output, reference["labels"])
        return predicted, {"correct": predicted == reference["label"],
                           "valid": predicted is not None}

    def aggregate(self, items: Sequence[Scored]) -> dict[str, float]:
        if not items:
            return {}
        scores = score(references=[i.reference["label"] for i in items],
                       predictions=[i.prediction for i in items],
                       labels=items[0].reference["labels"])
        return {"accuracy": scores.accuracy, "macro_f1": scores.macro_f1,
                "invalid_rate": scores.invalid_rate}
