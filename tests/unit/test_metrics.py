"""Unit tests for the scoring functions: hand-computed cases and parity with the libraries."""

from __future__ import annotations

import math
from typing import Any

import pytest
import sacrebleu
from nervaluate import Evaluator  # type: ignore[import-untyped]
from rouge_score.rouge_scorer import RougeScorer  # type: ignore[import-untyped]

from coordinator.evaluation.metrics import (
    NER_FIELDS,
    echoes_question,
    exact_match,
    faithfulness,
    ner_aggregate,
    ner_item,
    normalize_answer,
    rouge_item,
    token_f1,
    translation_corpus,
    translation_item,
)

# --- translation -------------------------------------------------------------------------------


def test_identical_translation_scores_100() -> None:
    scores = translation_item("The cat sat on the mat.", "The cat sat on the mat.")
    assert scores == {"bleu": pytest.approx(100.0), "chrf": pytest.approx(100.0)}


def test_disjoint_translation_scores_0() -> None:
    assert translation_item("abc def", "xyz uvw") == {"bleu": 0.0, "chrf": 0.0}  # no shared char


def test_sentence_bleu_by_hand() -> None:
    # Same length (BP = 1); clipped n-gram precisions 5/6, 3/5, 2/4, 1/3 -> (1/12) ** (1/4).
    scores = translation_item("the cat sat on the mat", "the cat sat on a mat")
    assert scores["bleu"] == pytest.approx(100 * (1 / 12) ** 0.25)


def test_translation_item_matches_sacrebleu() -> None:
    prediction, reference = "Der Hund lief schnell nach Hause.", "Der Hund rannte schnell heim."
    scores = translation_item(prediction, reference)
    assert scores["bleu"] == pytest.approx(sacrebleu.sentence_bleu(prediction, [reference]).score)
    chrf = sacrebleu.sentence_chrf(prediction, [reference], word_order=2).score
    assert scores["chrf"] == pytest.approx(chrf)
    assert 0 < scores["bleu"] < 100 and 0 < scores["chrf"] < 100


def test_translation_corpus_matches_sacrebleu() -> None:
    predictions = ["The dog ran home quickly.", "It is raining in Oslo today.", "Hello there!"]
    references = ["The dog ran home fast.", "Today it rains in Oslo.", "Hello!"]
    scores = translation_corpus(predictions, references)
    assert scores["bleu"] == pytest.approx(sacrebleu.corpus_bleu(predictions, [references]).score)
    chrf = sacrebleu.corpus_chrf(predictions, [references], word_order=2).score
    assert scores["chrf"] == pytest.approx(chrf)


def test_translation_corpus_identical_and_empty() -> None:
    lines = ["the quick brown fox jumps", "over the lazy dog again today"]
    assert translation_corpus(lines, lines) == {
        "bleu": pytest.approx(100.0),
        "chrf": pytest.approx(100.0),
    }
    assert translation_corpus([], []) == {}
    with pytest.raises(ValueError, match="1 predictions but 2 references"):
        translation_corpus(["a"], ["a", "b"])


# --- summarization -----------------------------------------------------------------------------


def test_rouge_identical_disjoint_and_by_hand() -> None:
    assert rouge_item("a short summary", "a short summary") == {
        "rouge1": 1.0,
        "rouge2": 1.0,
        "rougeL": 1.0,
    }
    assert rouge_item("alpha beta", "gamma delta") == {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    # 2 of 3 unigrams, 1 of 2 bigrams, LCS "the cat" = 2 of 3.
    scores = rouge_item("the cat sat", "the cat ran")
    assert scores == pytest.approx({"rouge1": 2 / 3, "rouge2": 1 / 2, "rougeL": 2 / 3})
    assert rouge_item("cats", "cat")["rouge1"] == 1.0  # Porter stemming


def test_rouge_matches_rouge_score() -> None:
    prediction = "The council approved the new budget on Monday after long debate."
    reference = "On Monday the city council approved a new budget."
    direct = RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True).score(
        reference, prediction
    )
    assert rouge_item(prediction, reference) == {k: v.fmeasure for k, v in direct.items()}


# --- NER ---------------------------------------------------------------------------------------

SENTENCE = "Ada Lovelace visited the University of Oslo in May 1843."
GOLD = [("Ada Lovelace", "PER"), ("University of Oslo", "ORG"), ("May 1843", "DATE")]


def _counts(item: dict[str, Any], scheme: str) -> dict[str, int]:
    return {field: item[f"{scheme}_{field}"] for field in NER_FIELDS}


def _ner(predicted: list[tuple[str, str]], gold: list[tuple[str, str]] = GOLD, **kw: Any) -> Any:
    return ner_item(
        sentence=kw.get("sentence", SENTENCE),
        predicted=predicted,
        gold=gold,
        extra_text=kw.get("extra_text", False),
    )


def test_ner_perfect_prediction() -> None:
    item = _ner(GOLD)
    perfect = dict.fromkeys(NER_FIELDS, 0) | {"correct": 3, "possible": 3, "actual": 3}
    assert _counts(item, "strict") == perfect
    assert _counts(item, "partial") == perfect
    assert item["gold"] == 3 and item["extra_text"] is False
    assert ner_aggregate([item]) == dict.fromkeys(
        ["precision_strict", "recall_strict", "f1_strict", "precision_partial", "recall_partial",
         "f1_partial", "r_base", "r_final"],
        1.0,
    )  # fmt: skip


def test_ner_boundary_error_is_partial() -> None:
    item = _ner([("Oslo", "ORG")], gold=[("University of Oslo", "ORG")])
    assert item["strict_incorrect"] == 1 and item["strict_correct"] == 0
    assert item["partial_partial"] == 1 and item["partial_correct"] == 0
    scores = ner_aggregate([item])
    assert scores["precision_strict"] == 0.0
    assert scores["precision_partial"] == scores["recall_partial"] == 0.5
    assert scores["r_base"] == scores["r_final"] == 0.5


def test_ner_type_error() -> None:
    item = _ner([("University of Oslo", "LOC")], gold=[("University of Oslo", "ORG")])
    assert item["strict_incorrect"] == 1 and item["strict_correct"] == 0
    assert item["partial_correct"] == 1  # the partial scheme ignores the type


def test_ner_label_outside_gold_types_is_not_dropped() -> None:
    item = _ner([("Ada Lovelace", "PERSON")], gold=[("Ada Lovelace", "PER")])
    assert item["strict_incorrect"] == 1 and item["strict_actual"] == 1


def test_ner_spurious_and_missed_by_hand() -> None:
    # Correct: Ada Lovelace. Spurious: "visited" (in the sentence, overlaps nothing) and
    # "Paris" (not in the sentence, no span). Missed: University of Oslo, May 1843.
    predicted = [("Ada Lovelace", "PER"), ("visited", "ORG"), ("Paris", "LOC")]
    item = _ner(predicted)
    expected = {"correct": 1, "incorrect": 0, "partial": 0, "missed": 2, "spurious": 2}
    expected |= {"possible": 3, "actual": 3}
    assert _counts(item, "strict") == expected
    assert _counts(item, "partial") == expected
    scores = ner_aggregate([item])
    assert scores["precision_strict"] == pytest.approx(1 / 3)
    assert scores["recall_strict"] == pytest.approx(1 / 3)
    assert scores["f1_strict"] == pytest.approx(1 / 3)
    assert scores["r_base"] == pytest.approx(1 / 3)


def test_ner_extra_text_halves_r_final() -> None:
    items = [_ner(GOLD, extra_text=True), _ner([("Oslo", "ORG")], extra_text=False)]
    # Item 1: R_base 1, R_final 0.5. Item 2: partial 1 of 3 gold -> R_base = R_final = 1/6.
    scores = ner_aggregate(items)
    assert scores["r_base"] == pytest.approx((1 + 1 / 6) / 2)
    assert scores["r_final"] == pytest.approx((0.5 + 1 / 6) / 2)
    assert scores["precision_strict"] == 3 / 4  # extra text does not change the counts


def test_ner_duplicates_take_successive_occurrences() -> None:
    sentence = "Oslo is far from Oslo."
    twice = [("Oslo", "LOC"), ("Oslo", "LOC")]
    item = _ner([*twice, ("Oslo", "LOC")], gold=twice, sentence=sentence)
    assert item["strict_correct"] == 2 and item["strict_spurious"] == 1
    item = _ner(twice, gold=twice[:1], sentence=sentence)
    assert item["strict_correct"] == 1 and item["strict_spurious"] == 1
    assert item["strict_missed"] == 0


def test_ner_case_insensitive_prediction() -> None:
    item = _ner([("ada lovelace", "PER")], gold=[("Ada Lovelace", "PER")])
    assert item["strict_correct"] == 1


def test_ner_no_gold_entities() -> None:
    silent = _ner([], gold=[])
    chatty = _ner([("Ada Lovelace", "PER")], gold=[])
    assert chatty["strict_spurious"] == 1 and chatty["gold"] == 0
    assert ner_aggregate([silent])["r_base"] == 1.0
    assert ner_aggregate([chatty])["r_base"] == 0.0
    assert ner_aggregate([silent, chatty])["r_final"] == 0.5
    assert ner_aggregate([]) == {}


def test_ner_gold_must_occur_in_sentence() -> None:
    with pytest.raises(ValueError, match="'Paris'"):
        _ner([], gold=[("Paris", "LOC")])


def test_ner_aggregate_matches_nervaluate_over_documents() -> None:
    other = "Grace Hopper joined Harvard in 1944."
    items = [
        _ner([("Ada Lovelace", "PER"), ("Oslo", "ORG"), ("1843", "DATE")]),
        _ner(
            [("Grace Hopper", "ORG"), ("Harvard", "ORG")],
            gold=[("Grace Hopper", "PER"), ("Harvard", "ORG"), ("1944", "DATE")],
            sentence=other,
        ),
    ]
    # The same entities written by hand as nervaluate spans (inclusive end offsets).
    gold = [
        [
            {"label": "PER", "start": 0, "end": 11},
            {"label": "ORG", "start": 25, "end": 42},
            {"label": "DATE", "start": 47, "end": 54},
        ],
        [
            {"label": "PER", "start": 0, "end": 11},
            {"label": "ORG", "start": 20, "end": 26},
            {"label": "DATE", "start": 31, "end": 34},
        ],
    ]
    pred = [
        [
            {"label": "PER", "start": 0, "end": 11},
            {"label": "ORG", "start": 39, "end": 42},
            {"label": "DATE", "start": 51, "end": 54},
        ],
        [{"label": "ORG", "start": 0, "end": 11}, {"label": "ORG", "start": 20, "end": 26}],
    ]
    overall = Evaluator(gold, pred, tags=["PER", "ORG", "DATE"], loader="dict").evaluate()
    scores = ner_aggregate(items)
    for scheme in ("strict", "partial"):
        for measure in ("precision", "recall", "f1"):
            expected = getattr(overall["overall"][scheme], measure)
            assert scores[f"{measure}_{scheme}"] == pytest.approx(expected)
    # By hand: strict 2 correct of 5 actual / 6 possible; partial adds 2 partials and 1 correct.
    assert scores["precision_strict"] == pytest.approx(2 / 5)
    assert scores["recall_partial"] == pytest.approx((3 + 0.5 * 2) / 6)


# --- QA ----------------------------------------------------------------------------------------


def test_normalize_answer() -> None:
    assert normalize_answer("  The Quick,  brown fox!  ") == "quick brown fox"
    assert normalize_answer("An apple a day") == "apple day"
    assert normalize_answer("theatre") == "theatre"  # articles only as whole words


def test_exact_match() -> None:
    assert exact_match("the Eiffel Tower", ["Eiffel Tower!"]) == 1.0
    assert exact_match("Eiffel Tower in Paris", ["Eiffel Tower"]) == 0.0
    assert exact_match("Paris", ["London", "paris."]) == 1.0


def test_token_f1_by_hand() -> None:
    assert token_f1("Eiffel Tower", ["Eiffel Tower Paris France"]) == pytest.approx(2 / 3)
    assert token_f1("Eiffel Tower Paris", ["the Eiffel Tower"]) == pytest.approx(0.8)
    assert token_f1("Eiffel Tower", ["nothing alike", "Eiffel Tower"]) == 1.0
    assert token_f1("Paris", ["London"]) == 0.0
    assert token_f1("", [""]) == 1.0 and token_f1("", ["Paris"]) == 0.0


@pytest.mark.parametrize("answers", [[], "Paris"])
def test_qa_needs_a_list_of_answers(answers: Any) -> None:
    with pytest.raises(ValueError, match="reference answers"):
        exact_match("Paris", answers)
    with pytest.raises(ValueError, match="reference answers"):
        token_f1("Paris", answers)


def test_faithfulness() -> None:
    context = "The capital of France is Paris, on the Seine."
    assert faithfulness("Paris is the capital.", context) == 1.0
    assert faithfulness("Berlin is the capital", context) == 0.5
    assert faithfulness("Berlin", context) == 0.0
    assert faithfulness("", context) == 0.0
    assert faithfulness("it is the", context) == 0.0  # no content tokens


def test_echoes_question() -> None:
    question = "What is the capital of France?"
    assert echoes_question("what is the capital of France", question)
    assert echoes_question("The capital of France is what", question)  # same tokens
    assert not echoes_question("Paris", question)
    assert not echoes_question("", question)
    assert not echoes_question("Paris is the capital", question)
    # a full sentence that restates the question but adds the answer is not an echo,
    # although it shares 4 of its 5 tokens with the question (token F1 0.8)
    assert math.isclose(token_f1("The capital of France is Paris", [question]), 0.8)
    assert not echoes_question("The capital of France is Paris", question)
    assert echoes_question("France capital?", question)  # only the question's words
    assert not echoes_question("the", question)  # no content word at all
