"""Unit tests for the task registry and the five tasks: plan, score one output, aggregate.

Expectations are worked out by hand from the YAML specs and the metric definitions.
Summarization's BERTScore is replaced by a fake embedder, so no model is loaded here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from coordinator.datasets.loader import Dataset, load_builtin
from coordinator.errors import JobSpecError
from coordinator.evaluation import summarization
from coordinator.evaluation.embeddings import BertScore, EmbeddingsUnavailable
from coordinator.evaluation.ner import format_entities, parse_entities
from coordinator.evaluation.tasks import (
    SPEC_DIR,
    Scored,
    TaskSpec,
    get_task,
    load_spec,
    metric_info,
    one_line,
    task_names,
)

TASKS = ["classification", "ner", "perplexity", "rag", "rag_judge", "summarization",
         "translation"]
# the prompted tasks planned from a dataset (the judge plans from a job; perplexity
# scores passages as they are, see test_perplexity.py)
DATASET_TASKS = [t for t in TASKS if t not in ("rag_judge", "perplexity")]
LOWER_IS_BETTER = {("classification", "invalid_rate"), ("rag", "echo_rate"),
                   ("rag_judge", "parse_failure_rate"), ("perplexity", "perplexity"),
                   ("perplexity", "nll_per_token"), ("perplexity", "bits_per_byte")}
TARGET_NAMES = {"de": "German", "fr": "French", "es": "Spanish"}


# --- registry ---------------------------------------------------------------------------


def test_registry_lists_one_task_per_yaml_file() -> None:
    files = sorted(p.stem for p in SPEC_DIR.glob("*.yaml"))
    assert files == TASKS
    assert task_names() == TASKS


@pytest.mark.parametrize("path", sorted(SPEC_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_spec_file_is_valid_and_named_after_its_file(path: Path) -> None:
    spec = TaskSpec.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
    assert spec.name == path.stem
    assert load_spec(path.stem) == spec
    assert spec.version >= 1
    assert spec.stop == (("\n",) if spec.kind == "complete" else ())
    assert spec.metrics, f"{path.name} declares no metric"
    assert all(isinstance(m.higher_is_better, bool) and m.aggregation for m in spec.metrics)
    assert len({m.name for m in spec.metrics}) == len(spec.metrics)


@pytest.mark.parametrize("name", TASKS)
def test_metric_directions(name: str) -> None:
    for info in get_task(name).spec.metrics:
        assert info.higher_is_better is ((name, info.name) not in LOWER_IS_BETTER), info.name


@pytest.mark.parametrize("name", TASKS)
def test_get_task_returns_the_task_of_that_name(name: str) -> None:
    task = get_task(name)
    assert task.name == name and task.spec.name == name


def test_unknown_task_suggests_the_nearest_name() -> None:
    with pytest.raises(JobSpecError, match=r"unknown task 'nerr'.*did you mean ner\b"):
        get_task("nerr")


def test_per_pair_metric_inherits_its_base_metadata() -> None:
    assert metric_info("translation", "bleu_en-de").higher_is_better is True
    assert metric_info("classification", "invalid_rate").higher_is_better is False
    assert metric_info("rag", "echo_rate").higher_is_better is False


# --- planning on the built-in datasets ---------------------------------------------------


def _input(task: str, item: Any) -> str:
    """The test input of an item: what must not leak into the few-shot part."""
    field = {"classification": "text", "ner": "text", "summarization": "document",
             "rag": "question", "translation": "source"}[task]
    return one_line(str(getattr(item, field)))


def _query_tail(task: str, item: Any) -> str:
    """How the prompt must end, written out from each YAML's `query` template."""
    if task == "classification":
        return f"Message: {one_line(item.text)}\nLabel:"
    if task == "ner":
        return f"Sentence: {one_line(item.text)}\nEntities:"
    if task == "summarization":
        return f"Document: {one_line(item.document)}\nSummary:"
    if task == "rag":
        return f"Question: {one_line(item.question)}\nAnswer:"
    return f"English: {one_line(item.source)}\n{TARGET_NAMES[item.tgt_lang]}:"


def _examples(task: str, dataset: Dataset, item: Any) -> list[Any]:
    """The train items the few-shot part must show for `item`."""
    train = list(dataset.split("train"))
    if task == "rag":
        return train[:1]
    if task == "translation":
        return [e for e in train if (e.src_lang, e.tgt_lang) == (item.src_lang, item.tgt_lang)]
    return train


@pytest.mark.parametrize("name", DATASET_TASKS)
def test_plan_renders_three_prompts_from_the_builtin_dataset(name: str) -> None:
    dataset = load_builtin(name)
    by_id = {item.id: item for item in dataset.items}
    planned = get_task(name).plan(dataset, limit=3, seed=1)

    assert len(planned) == 3
    assert len({p.item_key for p in planned}) == 3
    test_ids = [item.id for item in dataset.split("test")]
    assert all(p.item_key in test_ids for p in planned)
    positions = [test_ids.index(p.item_key) for p in planned]
    assert positions == sorted(positions), "sampled items keep file order"
    for p in planned:
        item = by_id[p.item_key]
        assert p.stop == ("\n",)
        assert p.prompt.endswith(_query_tail(name, item)), p.prompt[-200:]
        assert p.prompt.count(_input(name, item)) == 1, "test input is in the few-shot part"
        head = p.prompt[: -len(_query_tail(name, item))]
        examples = _examples(name, dataset, item)
        assert examples, "the built-in datasets all have few-shot examples"
        for example in examples:
            assert _input(name, example) in head


@pytest.mark.parametrize("name", DATASET_TASKS)
def test_same_seed_plans_the_same_items(name: str) -> None:
    dataset = load_builtin(name)
    task = get_task(name)
    assert task.plan(dataset, limit=3, seed=1) == task.plan(dataset, limit=3, seed=1)


@pytest.mark.parametrize("name", DATASET_TASKS)
def test_no_limit_plans_every_test_item_in_order(name: str) -> None:
    dataset = load_builtin(name)
    planned = get_task(name).plan(dataset, limit=None, seed=1)
    assert [p.item_key for p in planned] == [item.id for item in dataset.split("test")]


def test_plan_references_carry_what_scoring_needs() -> None:
    cls = load_builtin("classification")
    (c,) = get_task("classification").plan(cls, limit=1, seed=3)
    assert c.reference["labels"] == ["account", "billing", "shipping", "technical"]
    assert c.reference["label"] in c.reference["labels"]

    tr = get_task("translation").plan(load_builtin("translation"), limit=3, seed=1)
    assert all(p.reference["pair"] in {"en-de", "en-fr", "en-es"} for p in tr)

    rag = load_builtin("rag")
    for p in get_task("rag").plan(rag, limit=3, seed=1):
        ref = p.reference
        assert (ref["retriever"], ref["k"]) == ("bm25", 2)
        assert 0 < len(ref["retrieved"]) <= 2
        assert ref["hit"] == any(d in ref["doc_ids"] for d in ref["retrieved"])
        titles = {d.id: d.title for d in rag.documents}
        for doc_id in ref["retrieved"]:
            assert f"[{titles[doc_id]}]" in ref["context"]
        assert "Context:\n" + ref["context"] + "\nQuestion: " in p.prompt  # YAML query


# --- NER output parsing -------------------------------------------------------------------


@pytest.mark.parametrize(("output", "entities", "extra"), [
    (" Ada Lovelace [PER]; London [LOC]; 1843 [DATE]",
     [("Ada Lovelace", "PER"), ("London", "LOC"), ("1843", "DATE")], False),
    (" none", [], False),
    ("None.", [], False),
    ("", [], False),
    ("Ada [PER]; Oslo [LOC]. Hope this helps!", [("Ada", "PER")], True),
    ("I could not find any named entities in this sentence.", [], True),
    ('{"PER": ["Ada"]}', [], True),
    ("Ada [PER]; and also; Oslo [LOC]", [("Ada", "PER"), ("Oslo", "LOC")], True),
    ("Ada [per]; Oslo [Loc]", [("Ada", "PER"), ("Oslo", "LOC")], False),
    ("Ada [PER]\nSentence: Bob went home.\nEntities: Bob [PER]", [("Ada", "PER")], True),
    ("none\nSentence: Bob went home.", [], True),
    ("The entities are: Ada [PER]; Oslo [LOC]", [("Ada", "PER"), ("Oslo", "LOC")], True),
    ("Entities: Zoë Brønstad [PER]", [("Zoë Brønstad", "PER")], True),
])
def test_parse_entities(output: str, entities: list[tuple[str, str]], extra: bool) -> None:
    assert parse_entities(output) == (entities, extra)


def test_format_entities_is_what_the_parser_reads() -> None:
    entities = [("University of Oslo", "ORG"), ("12 March 2025", "DATE")]
    assert format_entities(entities) == "University of Oslo [ORG]; 12 March 2025 [DATE]"
    assert parse_entities(format_entities(entities)) == (entities, False)
    assert format_entities([]) == "none"
    assert parse_entities(format_entities([])) == ([], False)


# --- scoring one output -------------------------------------------------------------------

LABELS = ["account", "billing", "shipping", "technical"]


@pytest.mark.parametrize(("output", "prediction", "correct"), [
    (" billing\nMessage: my parcel is late\nLabel: shipping", "billing", True),
    ("Technical.", "technical", False),
])
def test_classification_score_item(output: str, prediction: str, correct: bool) -> None:
    task = get_task("classification")
    assert task.score_item(output, {"label": "billing", "labels": LABELS}) == (
        prediction, {"correct": correct, "valid": True})


def test_classification_output_naming_no_label_is_invalid() -> None:
    task = get_task("classification")
    assert task.score_item("I am not sure", {"label": "billing", "labels": LABELS}) == (
        None, {"correct": False, "valid": False})


DE_TARGET = "Die Besprechung wurde auf Donnerstag verschoben."


def test_translation_of_the_exact_reference_scores_100() -> None:
    task = get_task("translation")
    prediction, score = task.score_item(f" {DE_TARGET}\nEnglish: Next sentence.",
                                        {"target": DE_TARGET, "pair": "en-de"})
    assert prediction == DE_TARGET
    assert score["bleu"] == pytest.approx(100.0)
    assert score["chrf"] == pytest.approx(100.0)


def test_translation_sharing_nothing_scores_0() -> None:
    task = get_task("translation")
    prediction, score = task.score_item("qqq", {"target": DE_TARGET, "pair": "en-de"})
    assert prediction == "qqq"
    assert score == {"bleu": 0.0, "chrf": 0.0}


RAG_REFERENCE: dict[str, Any] = {
    "question": "Who is the manager of Velmora Rovers?",
    "answers": ["Dario Klemm"],
    "doc_ids": ["doc-013"],
    "retrieved": ["doc-013", "doc-014"],
    "context": "[Velmora Rovers] The club is managed by Dario Klemm since 2019.\n"
               "[Velmora Harriers] A running club for all ages.\n",
    "retriever": "bm25",
    "k": 2,
    "hit": True,
}


@pytest.mark.parametrize(("output", "expected"), [
    # exact answer: every content word is in the context and new to the question
    (" Dario Klemm\nQuestion: Who founded the club?",
     {"exact_match": 1.0, "token_f1": 1.0, "faithfulness": 1.0, "echo": False}),
    # one of two answer tokens: P = 1, R = 1/2, F1 = 2/3
    ("Klemm.", {"exact_match": 0.0, "token_f1": 2 / 3, "faithfulness": 1.0, "echo": False}),
    # restates the question; "manager" is not in the context ("managed" is)
    ("The manager of Velmora Rovers",
     {"exact_match": 0.0, "token_f1": 0.0, "faithfulness": 2 / 3, "echo": True}),
    ("Paris", {"exact_match": 0.0, "token_f1": 0.0, "faithfulness": 0.0, "echo": False}),
])
def test_rag_score_item(output: str, expected: dict[str, Any]) -> None:
    answer, score = get_task("rag").score_item(output, RAG_REFERENCE)
    assert answer == output.strip().splitlines()[0]
    assert score["hit"] is True
    assert score["echo"] is expected["echo"]
    for name in ("exact_match", "token_f1", "faithfulness"):
        assert score[name] == pytest.approx(expected[name]), name


def test_rag_score_keeps_the_retrieval_miss() -> None:
    _, score = get_task("rag").score_item("Dario Klemm", {**RAG_REFERENCE, "hit": False})
    assert score["hit"] is False and score["exact_match"] == 1.0


NER_SENTENCE = "Ada Lovelace met Charles Babbage in London in 1833."
NER_REFERENCE: dict[str, Any] = {
    "text": NER_SENTENCE,
    "entities": [["Ada Lovelace", "PER"], ["Charles Babbage", "PER"], ["London", "LOC"],
                 ["1833", "DATE"]],
}
NER_PERFECT = "Ada Lovelace [PER]; Charles Babbage [PER]; London [LOC]; 1833 [DATE]"


def test_ner_perfect_answer() -> None:
    prediction, score = get_task("ner").score_item(" " + NER_PERFECT, NER_REFERENCE)
    assert prediction == NER_PERFECT
    assert score["gold"] == 4
    assert score["strict_correct"] == score["gold"] == score["strict_actual"]
    assert score["partial_correct"] == 4
    for field in ("incorrect", "partial", "missed", "spurious"):
        assert score[f"strict_{field}"] == 0, field
    assert score["extra_text"] is False


def test_ner_short_span_and_wrong_type() -> None:
    # "Ada" overlaps "Ada Lovelace": strict incorrect, partial partial.
    # "London [ORG]" has the exact span and the wrong type: strict incorrect, partial correct.
    prediction, score = get_task("ner").score_item("Ada [PER]; London [ORG]", NER_REFERENCE)
    assert prediction == "Ada [PER]; London [ORG]"
    assert (score["strict_correct"], score["strict_incorrect"], score["strict_missed"],
            score["strict_spurious"]) == (0, 2, 2, 0)
    assert (score["partial_correct"], score["partial_partial"], score["partial_missed"],
            score["partial_spurious"]) == (1, 1, 2, 0)


def test_ner_invented_entity_is_spurious() -> None:
    _, score = get_task("ner").score_item("Grace Hopper [PER]", NER_REFERENCE)
    assert (score["strict_correct"], score["strict_spurious"], score["strict_missed"],
            score["strict_actual"]) == (0, 1, 4, 1)


def test_ner_none_misses_every_entity() -> None:
    prediction, score = get_task("ner").score_item("none", NER_REFERENCE)
    assert prediction == "none"
    assert (score["strict_missed"], score["strict_actual"], score["extra_text"]) == (4, 0, False)


class _FakeEmbedder:
    def __init__(self, f1: float) -> None:
        self.f1 = f1
        self.calls: list[tuple[list[str], list[str]]] = []

    def bertscore(self, candidates: list[str], references: list[str]) -> list[BertScore]:
        self.calls.append((list(candidates), list(references)))
        return [BertScore(precision=self.f1, recall=self.f1, f1=self.f1) for _ in candidates]


@pytest.fixture
def no_embeddings(monkeypatch: pytest.MonkeyPatch) -> None:
    def unavailable() -> Any:
        raise EmbeddingsUnavailable("MiniLM is not installed")

    monkeypatch.setattr(summarization, "default_embedder", unavailable)


@pytest.mark.usefixtures("no_embeddings")
def test_summary_equal_to_the_reference_has_rouge_1() -> None:
    reference = "The garden opens a second plot on 12 April."
    prediction, score = get_task("summarization").score_item(
        f"{reference}\nDocument: another one", {"summary": reference})
    assert prediction == reference
    assert {k: score[k] for k in ("rouge1", "rouge2", "rougeL")} == pytest.approx(
        {"rouge1": 1.0, "rouge2": 1.0, "rougeL": 1.0})
    assert "bertscore_f1" not in score
    assert score["note"] == "MiniLM is not installed"


@pytest.mark.usefixtures("no_embeddings")
def test_summary_rouge_by_hand() -> None:
    # 3 of 6 reference unigrams and 2 of 5 reference bigrams, all predicted ones correct:
    # ROUGE-1 F = 2·1·(1/2)/(3/2) = 2/3, ROUGE-2 F = 2·1·(2/5)/(7/5) = 4/7, LCS = 3 words.
    _, score = get_task("summarization").score_item("the cat sat",
                                                    {"summary": "the cat sat on the mat"})
    assert score["rouge1"] == pytest.approx(2 / 3)
    assert score["rouge2"] == pytest.approx(4 / 7)
    assert score["rougeL"] == pytest.approx(2 / 3)


def test_summary_bertscore_comes_from_the_embedder(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _FakeEmbedder(0.8)
    monkeypatch.setattr(summarization, "default_embedder", lambda: fake)
    _, score = get_task("summarization").score_item("A short summary.\nmore",
                                                    {"summary": "The reference."})
    assert score["bertscore_f1"] == 0.8
    assert "note" not in score
    assert fake.calls == [(["A short summary."], ["The reference."])]


# --- aggregation --------------------------------------------------------------------------


def _cls(label: str, prediction: str | None) -> Scored:
    return Scored(prediction=prediction, reference={"label": label, "labels": LABELS},
                  score={"correct": label == prediction, "valid": prediction is not None})


def test_classification_aggregate() -> None:
    items = [_cls("billing", "billing"), _cls("billing", "technical"),
             _cls("technical", "technical"), _cls("account", None)]
    # billing P=1 R=1/2 F=2/3; technical P=1/2 R=1 F=2/3; account 0; shipping 0 -> 1/3
    assert get_task("classification").aggregate(items) == pytest.approx(
        {"accuracy": 0.5, "macro_f1": 1 / 3, "invalid_rate": 0.25})
    assert get_task("classification").aggregate([]) == {}


def _tr(pair: str, prediction: str, target: str) -> Scored:
    return Scored(prediction=prediction, reference={"target": target, "pair": pair}, score={})


def test_translation_aggregate_of_one_pair() -> None:
    items = [_tr("en-de", DE_TARGET, DE_TARGET),
             _tr("en-de", "Bitte schalten Sie das Licht aus.",
                 "Bitte schalten Sie das Licht aus.")]
    assert get_task("translation").aggregate(items) == pytest.approx(
        {"bleu": 100.0, "chrf": 100.0})


def test_translation_aggregate_reports_each_pair() -> None:
    items = [_tr("en-de", DE_TARGET, DE_TARGET),
             _tr("en-fr", "qqq", "Je voudrais un café au lait, merci.")]
    result = get_task("translation").aggregate(items)
    assert set(result) == {"bleu", "chrf", "bleu_en-de", "chrf_en-de", "bleu_en-fr",
                           "chrf_en-fr"}
    assert result["bleu_en-de"] == pytest.approx(100.0)
    assert result["chrf_en-de"] == pytest.approx(100.0)
    assert result["bleu_en-fr"] == 0.0 and result["chrf_en-fr"] == 0.0
    assert 0.0 < result["chrf"] < 100.0
    assert 0.0 < result["bleu"] < 100.0


def _ner(output: str, reference: dict[str, Any]) -> Scored:
    prediction, score = get_task("ner").score_item(output, reference)
    return Scored(prediction=prediction, reference=reference, score=score)


def test_ner_aggregate_by_hand() -> None:
    oslo = {"text": "Oslo is cold in winter.", "entities": [["Oslo", "LOC"]]}
    rain = {"text": "It rained all day.", "entities": []}
    items = [_ner(NER_PERFECT, NER_REFERENCE),             # 4 correct
             _ner("Oslo [LOC]\nSentence: more", oslo),      # 1 correct, extra text
             _ner("none", rain),                            # nothing to find, nothing said
             _ner("Ada [PER]; London [ORG]", NER_REFERENCE)]
    result = get_task("ner").aggregate(items)
    # strict: correct 5, incorrect 2, missed 2 -> actual 7, possible 9
    assert result["precision_strict"] == pytest.approx(5 / 7)
    assert result["recall_strict"] == pytest.approx(5 / 9)
    assert result["f1_strict"] == pytest.approx(2 * 5 / (7 + 9))
    # partial: correct 6, partial 1, missed 2 -> (6 + 0.5) / 7 and / 9
    assert result["precision_partial"] == pytest.approx(6.5 / 7)
    assert result["recall_partial"] == pytest.approx(6.5 / 9)
    assert result["f1_partial"] == pytest.approx(2 * 6.5 / (7 + 9))
    # R_base per item 1, 1, 1, (1 + 0.5) / 4; R_final halves the second
    assert result["r_base"] == pytest.approx((3 + 0.375) / 4)
    assert result["r_final"] == pytest.approx((1 + 0.5 + 1 + 0.375) / 4)
    assert get_task("ner").aggregate([]) == {}


def test_summarization_aggregate_is_the_mean_rouge() -> None:
    items = [Scored("a", {"summary": "a"}, {"rouge1": 1.0, "rouge2": 0.5, "rougeL": 1.0}),
             Scored("b", {"summary": "b"}, {"rouge1": 0.5, "rouge2": 0.0, "rougeL": 0.25,
                                            "note": "no BERTScore"})]
    assert get_task("summarization").aggregate(items) == pytest.approx(
        {"rouge1": 0.75, "rouge2": 0.25, "rougeL": 0.625})


def test_summarization_aggregate_includes_bertscore_when_scored() -> None:
    items = [Scored("a", {"summary": "a"}, {"rouge1": 1.0, "rouge2": 1.0, "rougeL": 1.0,
                                            "bertscore_f1": 0.9}),
             Scored("b", {"summary": "b"}, {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0,
                                            "bertscore_f1": 0.3})]
    result = get_task("summarization").aggregate(items)
    assert result["bertscore_f1"] == pytest.approx(0.6)
    assert result["rouge1"] == pytest.approx(0.5)


def _rag(hit: bool, em: float, f1: float, faith: float, echo: bool) -> Scored:
    return Scored(prediction="x", reference=RAG_REFERENCE,
                  score={"hit": hit, "exact_match": em, "token_f1": f1,
                         "faithfulness": faith, "echo": echo})


def test_rag_aggregate_is_the_mean_of_item_scores() -> None:
    items = [_rag(True, 1.0, 1.0, 1.0, False), _rag(False, 0.0, 0.5, 0.5, False),
             _rag(True, 0.0, 0.0, 0.0, True), _rag(True, 1.0, 1.0, 1.0, False)]
    assert get_task("rag").aggregate(items) == pytest.approx(
        {"hit_rate": 0.75, "exact_match": 0.5, "token_f1": 0.625, "faithfulness": 0.625,
         "echo_rate": 0.25})
    assert get_task("rag").aggregate([]) == {}
