"""NER task: entities as ``text [TYPE]; text [TYPE]`` (or ``none``), scored strict and partial.

The parser keeps every well-formed ``text [TYPE]`` entry; anything else on the line —
prose, JSON, explanations — marks the output as carrying extra text, which halves the
reference study's R_final. Span matching and the strict/partial counts are nervaluate's.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from coordinator.datasets.loader import Dataset
from coordinator.evaluation import metrics
from coordinator.evaluation.tasks import (
    PlannedItem,
    Scored,
    TaskSpec,
    first_line,
    one_line,
    render_prompts,
    sample_test_items,
)

NONE_ANSWERS = frozenset({"none", "none.", "no entities", "no entities.", "-"})
_ENTRY = re.compile(r"\s*(?P<text>[^\[\];]+?)\s*\[\s*(?P<type>[A-Za-z_]+)\s*\]\s*\.?\s*")


def format_entities(entities: Sequence[tuple[str, str]]) -> str:
    """The answer format the prompt asks for: ``Ada [PER]; Oslo [LOC]`` or ``none``."""
    return "; ".join(f"{text} [{kind}]" for text, kind in entities) or "none"


def parse_entities(output: str) -> tuple[list[tuple[str, str]], bool]:
    """(entities, extra_text) from a model output; extra_text flags anything off-format."""
    lines = [line for line in output.splitlines() if line.strip()]
    line = first_line(output)
    extra = len(lines) > 1
    if line.casefold() in NONE_ANSWERS:
        return [], extra
    entities: list[tuple[str, str]] = []
    for part in line.split(";"):
        if not part.strip():
            continue
        match = _ENTRY.fullmatch(part)
        if match is None:
            extra = True
            continue
        text = match["text"]
        if ": " in text:  # prose before the list: "The entities are: Ada [PER]"
            text, extra = text.rsplit(": ", 1)[1].strip(), True
        entities.append((text, match["type"].upper()))
    if not entities and line:
        extra = True
    return entities, extra


class NerTask:
    name = "ner"

    def __init__(self, spec: TaskSpec) -> None:
        self.spec = spec

    def plan(self, dataset: Dataset, *, limit: int | None, seed: int) -> list[PlannedItem]:
        examples = [{"text": one_line(e.text),
                     "entities": format_entities([(x.text, x.type) for x in e.entities])}
                    for e in dataset.split("train")]
        planned = []
        for item in sample_test_items(dataset, limit=limit, seed=seed):
            few_shot, zero_shot = render_prompts(self.spec.prompt, examples=examples,
                                                 query={"text": one_line(item.text)})
            planned.append(PlannedItem(
                item_key=item.id, prompt=few_shot, zero_shot=zero_shot, stop=self.spec.stop,
                reference={"text": item.text,
                           "entities": [[x.text, x.type] for x in item.entities]}))
        return planned

    def score_item(self, output: str, reference: dict[str, Any]
                   ) -> tuple[str | None, dict[str, Any]]:
        entities, extra = parse_entities(output)
        score = metrics.ner_item(sentence=reference["text"], predicted=entities,
                                 gold=[(t, k) for t, k in reference["entities"]],
                                 extra_text=extra)
        return format_entities(entities), dict(score)

    def aggregate(self, items: Sequence[Scored]) -> dict[str, float]:
        return metrics.ner_aggregate([i.score for i in items]) if items else {}
