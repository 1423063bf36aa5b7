"""Unit tests for user datasets of every task: the item schemas, JSONL and CSV parsing.

A bad dataset must be refused with a DatasetError that names the file, the line and the
field, so the user can fix it without reading our code.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from coordinator.datasets.loader import Dataset, load_dataset_file, parse_dataset
from coordinator.errors import DatasetError

WHERE = Path("upload.jsonl")
DOCS = [{"id": "d1", "title": "Ada Lovelace", "text": "Ada Lovelace was born in London in 1815."},
        {"id": "d2", "title": "Oslo", "text": "Oslo is the capital of Norway."}]

GOOD: dict[str, dict[str, Any]] = {
    "classification": {"id": "c1", "text": "I was charged twice", "label": "billing"},
    "translation": {"id": "t1", "src_lang": "en", "tgt_lang": "de", "source": "Good morning.",
                    "target": "Guten Morgen."},
    "ner": {"id": "n1", "text": "Ada lives in Oslo.",
            "entities": [{"text": "Ada", "type": "PER"}, {"text": "Oslo", "type": "LOC"}]},
    "summarization": {"id": "s1", "document": "The library opens at nine on weekdays.",
                      "summary": "The library opens at nine."},
    "rag": {"id": "r1", "question": "When was Ada Lovelace born?",
            "answers": ["1815", "in 1815"], "doc_ids": ["d1"]},
}


def jsonl(*objects: dict[str, Any]) -> bytes:
    return "".join(json.dumps(o) + "\n" for o in objects).encode()


def docs_bytes(documents: list[dict[str, Any]] = DOCS) -> bytes:
    return jsonl(*documents)


def parse(raw: bytes, task: str, **kwargs: Any) -> Dataset:
    if task == "rag" and "documents_raw" not in kwargs:
        kwargs["documents_raw"] = docs_bytes()
    return parse_dataset(raw, task=task, where=WHERE, name="upload", **kwargs)


def refused(raw: bytes, task: str, *fragments: str, **kwargs: Any) -> str:
    """Parse must fail; the message names the file and every fragment."""
    with pytest.raises(DatasetError) as info:
        parse(raw, task, **kwargs)
    message = str(info.value)
    assert "upload.jsonl" in message, message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in: {message}"
    return message


def with_good_first(task: str, bad: dict[str, Any]) -> bytes:
    """A valid line 1 (a train example) and the bad item on line 2."""
    return jsonl({**GOOD[task], "id": "good", "split": "train"}, bad)


# --- good minimal files -----------------------------------------------------------------


@pytest.mark.parametrize("task", sorted(GOOD))
def test_minimal_file_of_each_task_parses(task: str) -> None:
    raw = jsonl(GOOD[task])
    dataset = parse(raw, task)
    assert (dataset.name, dataset.task, dataset.version) == ("upload", task, "user")
    assert len(dataset.items) == 1
    (item,) = dataset.split("test")
    assert item.id == GOOD[task]["id"]
    assert dataset.split("train") == ()
    assert len(dataset.sha256) == 64
    assert dataset.ref == f"upload@user#{dataset.sha256[:12]}"


def test_parsed_items_keep_every_field() -> None:
    ner = parse(jsonl(GOOD["ner"]), "ner").items[0]
    assert [(e.text, e.type) for e in ner.entities] == [("Ada", "PER"), ("Oslo", "LOC")]
    tr = parse(jsonl(GOOD["translation"]), "translation").items[0]
    assert (tr.src_lang, tr.tgt_lang, tr.source, tr.target) == (
        "en", "de", "Good morning.", "Guten Morgen.")
    rag = parse(jsonl(GOOD["rag"]), "rag")
    assert rag.items[0].answers == ("1815", "in 1815")
    assert rag.items[0].doc_ids == ("d1",)
    assert [(d.id, d.title) for d in rag.documents] == [("d1", "Ada Lovelace"), ("d2", "Oslo")]


def test_classification_labels_are_inferred_when_not_given() -> None:
    raw = jsonl(GOOD["classification"],
                {"id": "c2", "text": "app crashes on start", "label": "technical"})
    assert parse(raw, "classification").labels == {"billing": "", "technical": ""}


def test_ner_sentence_without_entities_is_fine() -> None:
    item = parse(jsonl({"id": "n2", "text": "It rained all day.", "entities": []}), "ner").items[0]
    assert item.entities == ()


def test_missing_split_means_test_for_user_files() -> None:
    raw = jsonl({**GOOD["summarization"], "id": "s0", "document": "Another document here.",
                 "split": "train"}, GOOD["summarization"])
    dataset = parse(raw, "summarization")
    assert [(i.id, i.split) for i in dataset.items] == [("s0", "train"), ("s1", "test")]


# --- bad items: file, line and field named ------------------------------------------------


def test_ner_entity_not_in_the_sentence() -> None:
    bad = {**GOOD["ner"], "id": "n2", "text": "Ada lives in Bergen.",
           "entities": [{"text": "Ada", "type": "PER"}, {"text": "Oslo", "type": "LOC"}]}
    refused(with_good_first("ner", bad), "ner", "line 2", "'Oslo'", "'text'")


def test_ner_lowercase_entity_type() -> None:
    bad = {**GOOD["ner"], "id": "n2", "text": "Bob lives in Oslo.",
           "entities": [{"text": "Bob", "type": "per"}]}
    refused(with_good_first("ner", bad), "ner", "line 2", "entities.0.type", "'per'")


def test_translation_language_must_be_a_code() -> None:
    bad = {**GOOD["translation"], "id": "t2", "source": "Good night.", "src_lang": "English"}
    refused(with_good_first("translation", bad), "translation", "line 2", "'src_lang'",
            "'English'")


def test_rag_needs_at_least_one_answer() -> None:
    bad = {**GOOD["rag"], "id": "r2", "question": "Where is Oslo?", "answers": []}
    refused(with_good_first("rag", bad), "rag", "line 2", "'answers'")


def test_rag_doc_id_must_be_in_the_documents() -> None:
    bad = {**GOOD["rag"], "id": "r2", "question": "Where is Oslo?", "doc_ids": ["d9"]}
    refused(with_good_first("rag", bad), "rag", "line 2", "'doc_ids'", "d9")


def test_rag_without_documents_is_refused() -> None:
    refused(jsonl(GOOD["rag"]), "rag", "documents", documents_raw=None)


def test_rag_bad_document_names_the_documents_file() -> None:
    with pytest.raises(DatasetError, match=r"docs\.jsonl: line 2: field 'text'"):
        parse(jsonl(GOOD["rag"]), "rag", documents_where=Path("docs.jsonl"),
              documents_raw=jsonl(DOCS[0], {"id": "d2", "title": "Oslo", "text": ""}))


@pytest.mark.parametrize("task", sorted(GOOD))
def test_unknown_field_is_refused(task: str) -> None:
    bad = {**GOOD[task], "id": "x2", "comment": "checked by Anna"}
    message = refused(with_good_first(task, bad), task, "line 2", "'comment'", "unknown field")
    assert "split" in message  # the message lists the fields that do exist


@pytest.mark.parametrize("task", sorted(GOOD))
def test_missing_field_is_named(task: str) -> None:
    field = {"classification": "label", "translation": "target", "ner": "entities",
             "summarization": "summary", "rag": "doc_ids"}[task]
    bad = {k: v for k, v in {**GOOD[task], "id": "x2"}.items() if k != field}
    refused(with_good_first(task, bad), task, "line 2", f"'{field}'", "missing")


@pytest.mark.parametrize(("task", "field", "variant"), [
    ("classification", "text", "I was charged twice"),
    ("classification", "text", "  i WAS charged   twice "),
    ("ner", "text", "Ada lives in Oslo."),
    ("summarization", "document", "The library opens at nine on weekdays."),
    ("translation", "source", "Good morning."),
    ("rag", "question", "When was Ada Lovelace born?"),
])
def test_same_input_in_train_and_test_is_refused(task: str, field: str, variant: str) -> None:
    raw = jsonl({**GOOD[task], "split": "train"}, {**GOOD[task], "id": "x2", field: variant})
    refused(raw, task, "line 2", f"'{field}'", "'train'", "line 1")


def test_duplicate_id_is_refused() -> None:
    raw = jsonl(GOOD["summarization"], {**GOOD["summarization"], "document": "Other text."})
    refused(raw, "summarization", "line 2", "'id'", "'s1'")


def test_bad_json_names_the_line() -> None:
    raw = jsonl(GOOD["classification"]) + b'{"id": "c2", "text": \n'
    refused(raw, "classification", "line 2", "JSON")


def test_file_with_only_train_items_is_refused() -> None:
    refused(jsonl({**GOOD["classification"], "split": "train"}), "classification", "'split'",
            "test")


def test_unknown_task_suggests_the_nearest() -> None:
    with pytest.raises(DatasetError, match=r"unknown task 'nerr'.*Did you mean 'ner'\?"):
        parse(jsonl(GOOD["ner"]), "nerr")


# --- checksums --------------------------------------------------------------------------


def test_sha256_is_that_of_the_bytes() -> None:
    raw = jsonl(GOOD["summarization"])
    assert parse(raw, "summarization").sha256 == hashlib.sha256(raw).hexdigest()


def test_rag_sha256_changes_when_only_the_documents_change() -> None:
    raw = jsonl(GOOD["rag"])
    first = parse(raw, "rag")
    again = parse(raw, "rag", documents_raw=docs_bytes())
    edited = [DOCS[0], {**DOCS[1], "text": "Oslo is the capital and largest city of Norway."}]
    changed = parse(raw, "rag", documents_raw=docs_bytes(edited))
    assert first.sha256 == again.sha256
    assert changed.sha256 != first.sha256
    assert changed.items == first.items


# --- CSV --------------------------------------------------------------------------------


def csv_parse(text: str, task: str, **kwargs: Any) -> Dataset:
    return parse(text.encode(), task, csv_format=True, **kwargs)


def test_classification_csv() -> None:
    dataset = csv_parse(
        "id,text,label,split\n"
        'c1,"I was charged twice, please refund",billing,train\n'
        "c2,app crashes on start,technical,test\n"
        "c3,where is my parcel,shipping,\n", "classification")
    assert [(i.id, i.text, i.label, i.split) for i in dataset.items] == [
        ("c1", "I was charged twice, please refund", "billing", "train"),
        ("c2", "app crashes on start", "technical", "test"),
        ("c3", "where is my parcel", "shipping", "test")]


def test_ner_csv_with_entities_as_json() -> None:
    dataset = csv_parse(
        "id,text,entities\n"
        'n1,Ada lives in Oslo.,"[{""text"": ""Ada"", ""type"": ""PER""}, '
        '{""text"": ""Oslo"", ""type"": ""LOC""}]"\n'
        "n2,It rained all day.,[]\n", "ner")
    assert [[(e.text, e.type) for e in i.entities] for i in dataset.items] == [
        [("Ada", "PER"), ("Oslo", "LOC")], []]


def test_rag_csv_with_pipe_separated_answers() -> None:
    dataset = csv_parse(
        "id,question,answers,doc_ids\n"
        "r1,When was Ada Lovelace born?,1815 | in 1815,d1\n"
        "r2,What is the capital of Norway?,Oslo,d2|d1\n"
        'r3,Where was Ada Lovelace born?,"[""London"", ""in London""]",d1\n', "rag")
    assert [(i.answers, i.doc_ids) for i in dataset.items] == [
        (("1815", "in 1815"), ("d1",)),
        (("Oslo",), ("d2", "d1")),
        (("London", "in London"), ("d1",))]


def test_csv_single_numeric_answer_is_one_answer() -> None:
    # "1815" is valid JSON (a number), but a lone value in a list column is one element
    dataset = csv_parse("id,question,answers,doc_ids\nr1,When was Ada born?,1815,d1\n", "rag")
    assert dataset.items[0].answers == ("1815",)


def test_csv_error_names_the_line_of_the_csv_file() -> None:
    text = ("id,text,label\n"
            "c1,I was charged twice,billing\n"
            "c2,,technical\n")
    with pytest.raises(DatasetError, match=r"upload\.jsonl: line 3: field 'text'"):
        csv_parse(text, "classification")


def test_csv_row_with_an_unquoted_comma_is_refused() -> None:
    # 4 cells under a 3-column header: the label must not silently become " please refund"
    text = "id,text,label\nc1,I was charged twice, please refund,billing\n"
    with pytest.raises(DatasetError, match=r"upload\.jsonl: line 2: .*Quote"):
        csv_parse(text, "classification")


def test_csv_rag_doc_id_error_names_the_line() -> None:
    text = "id,question,answers,doc_ids\nr1,When?,1815,d1\n\nr2,Where?,Oslo,d7\n"
    with pytest.raises(DatasetError, match=r"line 4: field 'doc_ids'"):
        csv_parse(text, "rag")


def test_load_dataset_file_reads_csv_and_jsonl(tmp_path: Path) -> None:
    csv_path = tmp_path / "tickets.csv"
    csv_path.write_text("id,text,label\nc1,I was charged twice,billing\n", encoding="utf-8")
    jsonl_path = tmp_path / "tickets.jsonl"
    jsonl_path.write_bytes(jsonl(GOOD["classification"]))
    from_csv = load_dataset_file(csv_path, task="classification")
    from_jsonl = load_dataset_file(jsonl_path, task="classification")
    assert from_csv.name == from_jsonl.name == "tickets"
    assert from_csv.items == from_jsonl.items
    assert from_csv.sha256 == hashlib.sha256(csv_path.read_bytes()).hexdigest()


def test_load_dataset_file_error_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(jsonl({**GOOD["ner"], "entities": [{"text": "Ada", "type": "per"}]}))
    with pytest.raises(DatasetError) as info:
        load_dataset_file(path, task="ner")
    assert str(path) in str(info.value) and "line 1" in str(info.value)


def test_load_dataset_file_rag_reads_the_documents_file(tmp_path: Path) -> None:
    items, docs = tmp_path / "qa.jsonl", tmp_path / "docs.jsonl"
    items.write_bytes(jsonl(GOOD["rag"]))
    docs.write_bytes(docs_bytes())
    dataset = load_dataset_file(items, task="rag", documents=docs)
    assert [d.id for d in dataset.documents] == ["d1", "d2"]
    with pytest.raises(DatasetError, match="documents"):
        load_dataset_file(items, task="rag")
