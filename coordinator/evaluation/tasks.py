"""The task registry: each evaluation task is a versioned YAML spec plus a small Python class.

The YAML (``task_specs/NAME.yaml``) holds what a reader tunes: prompt templates, stop
sequences, the default output budget and the metrics with their metadata
(``higher_is_better``, aggregation). The class turns a dataset into rendered prompts,
parses and scores one output on the coordinator, and aggregates scored items into the
task's metrics. A lookup of an unknown task suggests the nearest names.
"""

from __future__ import annotations

import difflib
import random
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal, Protocol

import yaml
from pydantic import BaseModel, ConfigDict, Field

from coordinator.datasets.loader import Dataset
from coordinator.errors import JobSpecError

SPEC_DIR = Path(__file__).resolve().parent / "task_specs"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class MetricInfo(_Frozen):
    """A metric a task reports, and how to read it."""

    name: str
    higher_is_better: bool
    aggregation: str


class PromptSpec(_Frozen):
    """Few-shot prompt: the instruction, one block per example, then the query."""

    instruction: str
    example: str
    query: str


class TaskSpec(_Frozen):
    """The versioned, declarative part of a task (its YAML file)."""

    name: str
    version: int = Field(ge=1)
    description: str
    max_tokens: int = Field(ge=1, le=4096)
    stop: tuple[str, ...]
    prompt: PromptSpec
    metrics: tuple[MetricInfo, ...]
    retrieval: dict[str, Any] | None = None
    examples: tuple[dict[str, str], ...] = ()  # few-shot examples kept in the spec itself
    kind: Literal["complete", "score"] = "complete"  # score: the worker's token log-probs


@dataclass(frozen=True)
class PlannedItem:
    """One rendered work item of a task: its prompt and what scoring needs to know."""

    item_key: str
    prompt: str
    reference: dict[str, Any]
    stop: tuple[str, ...]
    zero_shot: str = ""  # instruction + query without examples, for a chat template


@dataclass(frozen=True)
class Scored:
    """One finished item as aggregation sees it."""

    prediction: str | None
    reference: dict[str, Any]
    score: dict[str, Any]


class Task(Protocol):
    name: str
    spec: TaskSpec

    def plan(self, dataset: Dataset, *, limit: int | None, seed: int) -> list[PlannedItem]: ...

    def score_item(self, output: str, reference: dict[str, Any]
                   ) -> tuple[str | None, dict[str, Any]]: ...

    def aggregate(self, items: Sequence[Scored]) -> dict[str, float]: ...


def one_line(text: str) -> str:
    """Collapse all whitespace (newlines included) so a field stays on one prompt line."""
    return " ".join(text.split())


def sample_test_items(dataset: Dataset, *, limit: int | None, seed: int) -> list[Any]:
    """The test split, or a seeded sample of `limit` of its items (in file order)."""
    items = list(dataset.split("test"))
    if limit is not None and limit < len(items):
        chosen = set(random.Random(seed).sample(range(len(items)), limit))
        items = [item for index, item in enumerate(items) if index in chosen]
    return items


def render_prompts(prompt: PromptSpec, *, examples: Sequence[dict[str, str]],
                   query: dict[str, str], shared: dict[str, str] | None = None
                   ) -> tuple[str, str]:
    """(few-shot, zero-shot) prompt text from a spec's templates.

    `examples` fill the example template, `query` the query template; `shared` fills
    placeholders common to all three (such as language names).
    """
    common = shared or {}
    instruction = prompt.instruction.format(**common)
    asked = prompt.query.format(**common, **query)
    shots = "".join(prompt.example.format(**common, **example) for example in examples)
    return instruction + shots + asked, instruction + asked


def first_line(output: str) -> str:
    """The first non-blank line of a model output, stripped (base models ramble on)."""
    return next((line.strip() for line in output.splitlines() if line.strip()), "")


@cache
def load_spec(name: str) -> TaskSpec:
    path = SPEC_DIR / f"{name}.yaml"
    spec = TaskSpec.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
    if spec.name != name:
        raise ValueError(f"{path}: name {spec.name!r} does not match the file name")
    return spec


def task_names() -> list[str]:
    return sorted(p.stem for p in SPEC_DIR.glob("*.yaml"))


@cache
def _tasks() -> dict[str, Task]:
    from coordinator.evaluation.classification import ClassificationTask
    from coordinator.evaluation.judge import JudgeTask
    from coordinator.evaluation.ner import NerTask
    from coordinator.evaluation.perplexity import PerplexityTask
    from coordinator.evaluation.rag import RagTask
    from coordinator.evaluation.summarization import SummarizationTask
    from coordinator.evaluation.translation import TranslationTask

    classes: dict[str, type[Any]] = {
        "classification": ClassificationTask, "translation": TranslationTask,
        "ner": NerTask, "summarization": SummarizationTask, "rag": RagTask,
        "rag_judge": JudgeTask, "perplexity": PerplexityTask}
    return {name: classes[name](load_spec(name)) for name in task_names()}


def get_task(name: str) -> Task:
    """The registered task called `name`; JobSpecError naming the nearest ones otherwise."""
    tasks = _tasks()
    task = tasks.get(name)
    if task is not None:
        return task
    near = difflib.get_close_matches(name, list(tasks), n=3)
    hint = f"; did you mean {', '.join(near)}?" if near else ""
    raise JobSpecError(f"tasks: unknown task '{name}'{hint} (available: "
                       f"{', '.join(sorted(tasks))})")


def metric_info(task: str, metric: str) -> MetricInfo:
    """Metadata of one metric; per-pair variants (`bleu_en-de`) inherit their base's."""
    for info in get_task(task).spec.metrics:
        if metric == info.name or metric.startswith(info.name + "_"):
            return info
    return MetricInfo(name=metric, higher_is_better=True, aggregation="")
