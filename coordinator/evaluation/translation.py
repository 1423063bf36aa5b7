"""Translation task: few-shot prompts per language pair, sacreBLEU BLEU and chrF++.

Examples are the train items of the same pair. The first line of the output is the
translation. Quality is corpus-level (as sacreBLEU defines it), overall and per pair;
each item also keeps its sentence-level scores for inspection.
"""

from __future__ import annotations

from collections import defaultdict
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

LANGUAGES = {"en": "English", "de": "German", "fr": "French", "es": "Spanish",
             "it": "Italian", "pt": "Portuguese", "nl": "Dutch", "pl": "Polish",
             "sv": "Swedish", "da": "Danish", "fi": "Finnish", "cs": "Czech",
             "ro": "Romanian", "tr": "Turkish", "ru": "Russian", "uk": "Ukrainian",
             "ja": "Japanese", "zh": "Chinese", "ko": "Korean", "ar": "Arabic",
             "hi": "Hindi", "sw": "Swahili"}


def language_name(code: str) -> str:
    return LANGUAGES.get(code.split("-")[0], code)


class TranslationTask:
    name = "translation"

    def __init__(self, spec: TaskSpec) -> None:
        self.spec = spec

    def plan(self, dataset: Dataset, *, limit: int | None, seed: int) -> list[PlannedItem]:
        examples: dict[tuple[str, str], list[dict[str, str]]] = defaultdict(list)
        for e in dataset.split("train"):
            examples[(e.src_lang, e.tgt_lang)].append(
                {"source": one_line(e.source), "target": one_line(e.target)})
        planned = []
        for item in sample_test_items(dataset, limit=limit, seed=seed):
            names = {"src_name": language_name(item.src_lang),
                     "tgt_name": language_name(item.tgt_lang)}
            few_shot, zero_shot = render_prompts(
                self.spec.prompt, examples=examples[(item.src_lang, item.tgt_lang)],
                query={"source": one_line(item.source)}, shared=names)
            planned.append(PlannedItem(
                item_key=item.id, prompt=few_shot, zero_shot=zero_shot, stop=self.spec.stop,
                reference={"target": item.target, "pair": f"{item.src_lang}-{item.tgt_lang}"}))
        return planned

    def score_item(self, output: str, reference: dict[str, Any]
                   ) -> tuple[str | None, dict[str, Any]]:
        prediction = first_line(output)
        return prediction, metrics.translation_item(prediction, reference["target"])

    def aggregate(self, items: Sequence[Scored]) -> dict[str, float]:
        if not items:
            return {}
        result = metrics.translation_corpus([i.prediction or "" for i in items],
                                            [i.reference["target"] for i in items])
        pairs: dict[str, list[Scored]] = defaultdict(list)
        for item in items:
            pairs[item.reference["pair"]].append(item)
        if len(pairs) > 1:
            for pair, members in sorted(pairs.items()):
                scores = metrics.translation_corpus([i.prediction or "" for i in members],
                                                    [i.reference["target"] for i in members])
                result.update({f"{name}_{pair}": value for name, value in scores.items()})
        return result
