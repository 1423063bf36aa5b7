"""The RAG judge: a model in the fleet rates each answer of a finished RAG job as correct or not.

Like RAGAS's answer-correctness judge reduced to 0/1: the judge sees the question, the
accepted reference answers and the candidate answer, and answers yes or no. A verdict
that is neither is a parse failure: counted in `parse_failure_rate`, never turned into
a score, so no metric is ever NaN. `agreement_with_em` tells how far the judge can be
trusted where exact match is unambiguous.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from coordinator.datasets.loader import Dataset
from coordinator.errors import JobSpecError
from coordinator.evaluation.tasks import (
    PlannedItem,
    Scored,
    TaskSpec,
    first_line,
    one_line,
    render_prompts,
)

_VERDICT = re.compile(r"^\W*(yes|no|correct|incorrect|true|false)\b", re.IGNORECASE)
_POSITIVE = {"yes", "correct", "true"}


def parse_verdict(output: str) -> bool | None:
    """True / False from the first word of the output, or None when it is neither."""
    match = _VERDICT.match(first_line(output))
    return None if match is None else match[1].lower() in _POSITIVE


class JudgeTask:
    name = "rag_judge"

    def __init__(self, spec: TaskSpec) -> None:
        self.spec = spec

    def plan(self, dataset: Dataset, *, limit: int | None, seed: int) -> list[PlannedItem]:
        raise JobSpecError("tasks: rag_judge runs on the answers of a finished RAG job, not on "
                           "a dataset; use slmfleet judge JOB --model MODEL")

    def plan_answers(self, answers: Sequence[dict[str, Any]]) -> list[PlannedItem]:
        """One judge item per RAG answer: `{key, question, answers, candidate, exact_match}`."""
        planned = []
        for answer in answers:
            query = {"question": one_line(answer["question"]),
                     "reference": " | ".join(answer["answers"]),
                     "candidate": one_line(answer["candidate"]) or "(no answer)"}
            few_shot, zero_shot = render_prompts(self.spec.prompt,
                                                 examples=list(self.spec.examples), query=query)
            planned.append(PlannedItem(
                item_key=answer["key"], prompt=few_shot, zero_shot=zero_shot,
                stop=self.spec.stop,
                reference={"exact_match": float(answer["exact_match"]),
                           "candidate": answer["candidate"]}))
        return planned

    def score_item(self, output: str, reference: dict[str, Any]
                   ) -> tuple[str | None, dict[str, Any]]:
        verdict = parse_verdict(output)
        return (None if verdict is None else "yes" if verdict else "no"), {
            "verdict": verdict, "valid": verdict is not None,
            "agrees_with_em": None if verdict is None
            else verdict == (reference["exact_match"] >= 1.0)}

    def aggregate(self, items: Sequence[Scored]) -> dict[str, float]:
        if not items:
            return {}
        valid = [i.score for i in items if i.score["valid"]]
        result = {"parse_failure_rate": 1 - len(valid) / len(items)}
        if valid:  # with no parsed verdict there is nothing to average: omitted, not NaN
            result["judged_correct"] = sum(bool(v["verdict"]) for v in valid) / len(valid)
            result["agreement_with_em"] = sum(bool(v["agrees_with_em"])
                                              for v in valid) / len(valid)
        return result
