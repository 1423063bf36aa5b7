"""Scoring functions for generated text: translation, summarization, NER and extractive QA.

Every function is pure and delegates the metric itself to the reference library (sacrebleu,
rouge-score, nervaluate); this module only adapts inputs and names the outputs. Item scores are
flat ``dict[str, float]`` so they can be stored as JSON and aggregated or bootstrapped later.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from nervaluate import Evaluator
from nervaluate.entities import EvaluationResult
from rouge_score.rouge_scorer import RougeScorer
from sacrebleu import BLEU, CHRF

Entity = tuple[str, str]
"""A named entity as ``(surface text, type)``, e.g. ``("University of Oslo", "ORG")``."""

NER_SCHEMES = ("strict", "partial")
NER_FIELDS = ("correct", "incorrect", "partial", "missed", "spurious", "possible", "actual")

_SENTENCE_BLEU = BLEU(effective_order=True)
_CORPUS_BLEU = BLEU()
_CHRF_PP = CHRF(word_order=2)
_ROUGE = RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)
_STOPWORDS = frozenset(
    "i me my we our you your he him his she her it its they them their what which who whom this"
    " that these those am is are was were be been being have has had do does did doing but if or"
    " and because as until while of at by for with about against between into through during"
    " before after above below to from up down in out on off over under again then once here"
    " there when where why how all any both each few more most other some such no nor not only"
    " own same so than too very can will just should now would could also".split()
)


# --- translation and summarization -----------------------------------------------------------


def translation_item(prediction: str, reference: str) -> dict[str, float]:
    """Sentence BLEU (effective order) and chrF++ of one prediction, on sacrebleu's 0-100 scale."""
    return {
        "bleu": _SENTENCE_BLEU.sentence_score(prediction, [reference]).score,
        "chrf": _CHRF_PP.sentence_score(prediction, [reference]).score,
    }


def translation_corpus(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Corpus BLEU and chrF++ (0-100) over aligned predictions and references; ``{}`` if empty."""
    if len(predictions) != len(references):
        raise ValueError(
            f"translation_corpus got {len(predictions)} predictions but {len(references)}"
            " references; pass one reference per prediction, in the same order"
        )
    if not predictions:
        return {}
    hypotheses, streams = list(predictions), [list(references)]
    return {
        "bleu": float(_CORPUS_BLEU.corpus_score(hypotheses, streams).score),
        "chrf": float(_CHRF_PP.corpus_score(hypotheses, streams).score),
    }


def rouge_item(prediction: str, reference: str) -> dict[str, float]:
    """ROUGE-1, ROUGE-2 and ROUGE-L F-measures (0-1, Porter stemming) of one summary."""
    scores = _ROUGE.score(reference, prediction)  # rouge-score's order is (target, prediction)
    return {name: float(scores[name].fmeasure) for name in ("rouge1", "rouge2", "rougeL")}


# --- named entity recognition ------------------------------------------------------------------


def _occurrences(text: str, sentence: str, *, ignore_case: bool) -> list[tuple[int, int]]:
    """All (possibly overlapping) ``[start, end)`` spans where ``text`` occurs in ``sentence``."""
    pattern = re.compile(re.escape(text), re.IGNORECASE if ignore_case else 0)
    spans, match = [], pattern.search(sentence)
    while match is not None:
        spans.append((match.start(), match.end()))
        match = pattern.search(sentence, match.start() + 1)
    return spans


Span = dict[str, Any]  # nervaluate's entity dict {"label", "start", "end"}, end inclusive


def _locate(entities: Sequence[Entity], sentence: str, *, gold: bool) -> list[Span | None]:
    """Character span dict per entity (nervaluate's inclusive ``end``), ``None`` if not found.

    Each entity takes the first occurrence of its text not already taken by an earlier entity
    of the same list, so the k-th repeat of a text gets its k-th occurrence. Predicted texts
    fall back to a case-insensitive search; gold texts must occur verbatim.
    """
    taken: set[tuple[int, int]] = set()
    located: list[Span | None] = []
    for text, label in entities:
        candidates = _occurrences(text, sentence, ignore_case=False) if text.strip() else []
        if not gold and text.strip():
            candidates += _occurrences(text, sentence, ignore_case=True)
        span = next((c for c in candidates if c not in taken), None)
        if span is None and gold:
            raise ValueError(
                f"gold entity {text!r} ({label}) does not occur (again) in the sentence"
                f" {sentence!r}; gold entity texts must be exact substrings of it"
            )
        if span is None:
            located.append(None)
        else:
            taken.add(span)
            located.append({"label": label, "start": span[0], "end": span[1] - 1})
    return located


def ner_item(
    *,
    sentence: str,
    predicted: Sequence[Entity],
    gold: Sequence[Entity],
    extra_text: bool,
) -> dict[str, float | int | bool]:
    """nervaluate counts of the ``strict`` and ``partial`` schemes for one sentence.

    Entities are located as character spans in ``sentence`` (see :func:`_locate`) and scored
    by :class:`nervaluate.Evaluator`. A predicted text that does not occur in the sentence has no
    span and is counted as spurious (and in ``actual``) in both schemes. Keys are
    ``<scheme>_<field>`` for the fields in :data:`NER_FIELDS`, plus ``gold`` (number of gold
    entities) and ``extra_text`` (the output carried text beyond the requested format).
    """
    gold_spans = [s for s in _locate(gold, sentence, gold=True) if s is not None]
    located = _locate(predicted, sentence, gold=False)
    pred_spans = [s for s in located if s is not None]
    unlocated = len(located) - len(pred_spans)
    # nervaluate silently drops entities whose label is not in `tags`: pass every label seen.
    tags = sorted({s["label"] for s in gold_spans + pred_spans})
    overall = Evaluator([gold_spans], [pred_spans], tags=tags, loader="dict").evaluate()["overall"]
    item: dict[str, float | int | bool] = {}
    for scheme in NER_SCHEMES:
        result = overall[scheme]
        for field in NER_FIELDS:
            item[f"{scheme}_{field}"] = int(getattr(result, field))
        item[f"{scheme}_spurious"] = int(item[f"{scheme}_spurious"]) + unlocated
        item[f"{scheme}_actual"] = int(item[f"{scheme}_actual"]) + unlocated
    item["gold"] = len(gold)
    item["extra_text"] = extra_text
    return item


def _adherence(item: Mapping[str, Any]) -> tuple[float, float]:
    """(R_base, R_final) of one item; see :func:`ner_aggregate`."""
    gold = int(item["gold"])
    if gold == 0:
        r_base = 1.0 if int(item["partial_actual"]) == 0 else 0.0
    else:
        r_base = (int(item["partial_correct"]) + 0.5 * int(item["partial_partial"])) / gold
    return r_base, r_base / 2 if bool(item["extra_text"]) else r_base


def ner_aggregate(items: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Micro-averaged NER scores and instruction adherence over :func:`ner_item` results.

    ``precision_<scheme>``, ``recall_<scheme>``, ``f1_<scheme>`` sum each count over items and
    apply nervaluate's definitions: strict P = correct/actual, R = correct/possible; partial
    P = (correct + 0.5·partial)/actual, R = (correct + 0.5·partial)/possible; F1 is their
    harmonic mean, and any ratio with a zero denominator is 0.

    Instruction adherence (the reference study's score), per item then averaged over items:
    R_base = (correct + 0.5·partial)/gold with partial-scheme counts, or for an item with no gold
    entities 1.0 if nothing was predicted else 0.0; R_final = R_base/2 when the output carried
    extra text beyond the requested format, else R_base. Reported as ``r_base`` and ``r_final``.
    Empty ``items`` give ``{}``.
    """
    if not items:
        return {}
    scores: dict[str, float] = {}
    for scheme in NER_SCHEMES:
        counts = {f: sum(int(item[f"{scheme}_{f}"]) for item in items) for f in NER_FIELDS[:5]}
        result = EvaluationResult(**counts)
        result.compute_metrics(partial_or_type=scheme == "partial")
        for measure in ("precision", "recall", "f1"):
            scores[f"{measure}_{scheme}"] = float(getattr(result, measure))
    adherence = [_adherence(item) for item in items]
    scores["r_base"] = sum(base for base, _ in adherence) / len(items)
    scores["r_final"] = sum(final for _, final in adherence) / len(items)
    return scores


# --- extractive question answering -------------------------------------------------------------


def normalize_answer(s: str) -> str:
    """SQuAD normalization: lowercase, drop punctuation and articles, collapse whitespace."""
    return " ".join(_ARTICLES.sub(" ", s.lower().translate(_PUNCTUATION)).split())


def _require_answers(answers: Sequence[str]) -> None:
    if isinstance(answers, str) or not answers:
        raise ValueError("QA scoring needs a non-empty sequence of reference answers (not a str)")


def exact_match(prediction: str, answers: Sequence[str]) -> float:
    """1.0 if the normalized prediction equals any normalized reference answer, else 0.0."""
    _require_answers(answers)
    target = normalize_answer(prediction)
    return max(float(target == normalize_answer(a)) for a in answers)


def _f1(prediction_tokens: list[str], answer_tokens: list[str]) -> float:
    if not prediction_tokens or not answer_tokens:  # SQuAD 2.0: both empty counts as a match
        return float(prediction_tokens == answer_tokens)
    same = sum((Counter(prediction_tokens) & Counter(answer_tokens)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(prediction_tokens), same / len(answer_tokens)
    return 2 * precision * recall / (precision + recall)


def token_f1(prediction: str, answers: Sequence[str]) -> float:
    """SQuAD token-overlap F1 of the prediction against the best-matching reference answer."""
    _require_answers(answers)
    tokens = normalize_answer(prediction).split()
    return max(_f1(tokens, normalize_answer(a).split()) for a in answers)


def faithfulness(answer: str, context: str) -> float:
    """Share of the answer's content tokens (with repeats) that occur in the context.

    Tokens are :func:`normalize_answer` tokens minus a small built-in English stopword list.
    An answer with no content tokens (empty, or only stopwords) scores 0.0: it makes no claim
    that the context supports, so it earns no credit.
    """
    content = [t for t in normalize_answer(answer).split() if t not in _STOPWORDS]
    if not content:
        return 0.0
    vocabulary = set(normalize_answer(context).split())
    return sum(t in vocabulary for t in content) / len(content)


def echoes_question(answer: str, question: str) -> bool:
    """True when the answer only restates the question: it adds no content word of its own.

    Content words are :func:`normalize_answer` tokens minus the stopword list; "Paris" in
    "The capital of France is Paris" is new, so that answer does not echo "What is the
    capital of France?". An answer with no content words never echoes.
    """
    content = {t for t in normalize_answer(answer).split() if t not in _STOPWORDS}
    asked = {t for t in normalize_answer(question).split() if t not in _STOPWORDS}
    return bool(content) and content <= asked
