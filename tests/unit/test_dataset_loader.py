"""Unit tests for the dataset loader: the built-in classification set and user JSONL files."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from collections import Counter
from pathlib import Path

import pydantic
import pytest

from coordinator.datasets import loader
from coordinator.datasets.loader import (
    Dataset,
    DatasetItem,
    builtin_names,
    load_builtin,
    load_classification_file,
)
from coordinator.errors import DatasetError, SlmfleetError

BUILTIN = Path(loader.__file__).resolve().parent / "builtin"
LABELS = {"billing": "payments", "technical": "errors", "account": "login", "shipping": "delivery"}


def _line(item_id: str, text: str, label: str, split: str | None = "test") -> str:
    obj = {"id": item_id, "text": text, "label": label}
    if split is not None:
        obj["split"] = split
    return json.dumps(obj)


def _write(tmp_path: Path, lines: list[str], name: str = "data.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


GOOD = [
    _line("a1", "I was charged twice", "billing", "train"),
    _line("a2", "app crashes on start", "technical"),
    _line("a3", "where is my parcel", "shipping"),
]


# --- built-in ----------------------------------------------------------------------------


def test_builtin_names_lists_classification() -> None:
    assert "classification" in builtin_names()


@pytest.mark.parametrize("name", ["classification", "builtin:classification"])
def test_builtin_loads(name: str) -> None:
    ds = load_builtin(name)
    assert isinstance(ds, Dataset)
    assert ds.name == "classification"
    assert ds.task == "classification"
    assert ds.version == "1.1.0"
    assert list(ds.labels) == ["billing", "technical", "account", "shipping"]
    assert all(desc.strip() for desc in ds.labels.values())
    assert ds.ref == f"classification@1.1.0#{ds.sha256[:12]}"
    assert len(ds.sha256) == 64


def test_builtin_counts_are_balanced() -> None:
    ds = load_builtin("classification")
    test, train = ds.split("test"), ds.split("train")
    assert len(test) >= 72
    assert len(train) == 8
    assert len(test) + len(train) == len(ds.items)
    test_counts = Counter(item.label for item in test)
    train_counts = Counter(item.label for item in train)
    assert set(test_counts) == set(ds.labels) == set(train_counts)
    assert set(test_counts.values()) == {25}
    assert set(train_counts.values()) == {2}


def test_builtin_items_are_well_formed() -> None:
    ds = load_builtin("classification")
    ids = [item.id for item in ds.items]
    assert len(set(ids)) == len(ids)
    assert all(item_id.startswith("cls-") and len(item_id) == 8 for item_id in ids)
    texts = [item.text.casefold() for item in ds.items]
    assert len(set(texts)) == len(texts)
    assert all(item.label in ds.labels for item in ds.items)


def test_builtin_splits_never_mix() -> None:
    ds = load_builtin("classification")
    train = {" ".join(i.text.split()).casefold() for i in ds.split("train")}
    test = {" ".join(i.text.split()).casefold() for i in ds.split("test")}
    assert train and test
    assert not train & test
    assert not {i.id for i in ds.split("train")} & {i.id for i in ds.split("test")}


def test_builtin_sha256_matches_file_and_metadata() -> None:
    meta = json.loads((BUILTIN / "classification.json").read_text(encoding="utf-8"))
    data = (BUILTIN / meta["file"]).read_bytes()
    assert meta["sha256"] == hashlib.sha256(data).hexdigest()
    assert load_builtin("classification").sha256 == meta["sha256"]
    assert meta["name"] == meta["task"] == "classification"
    assert (BUILTIN / "classification.md").is_file()


def test_builtin_sha256_mismatch_is_rejected(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy = tmp_path / "builtin"
    shutil.copytree(BUILTIN, copy)
    jsonl = copy / "classification.jsonl"
    jsonl.write_bytes(jsonl.read_bytes().replace(b'"label": "billing"', b'"label": "account"', 1))
    monkeypatch.setattr(loader, "BUILTIN_DIR", copy)
    with pytest.raises(DatasetError, match="sha256") as info:
        load_builtin("classification")
    assert "classification.jsonl" in str(info.value)


def test_unknown_builtin_suggests_nearest_name() -> None:
    with pytest.raises(DatasetError) as info:
        load_builtin("clasification")
    message = str(info.value)
    assert "Did you mean 'classification'" in message
    assert "clasification" in message
    with pytest.raises(DatasetError, match="Did you mean 'classification'"):
        load_builtin("builtin:classifcation")


def test_unknown_builtin_without_close_match_lists_available() -> None:
    with pytest.raises(DatasetError) as info:
        load_builtin("zzzz")
    assert "Did you mean" not in str(info.value)
    assert "classification" in str(info.value)


def test_dataset_error_is_slmfleet_error() -> None:
    with pytest.raises(SlmfleetError):
        load_builtin("nope")


def test_dataset_and_items_are_frozen() -> None:
    ds = load_builtin("classification")
    with pytest.raises(dataclasses.FrozenInstanceError):
        ds.name = "other"  # type: ignore[misc]
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        ds.items[0].label = "other"
    assert isinstance(ds.items, tuple)


def test_split_rejects_unknown_name() -> None:
    with pytest.raises(ValueError, match="unknown split"):
        load_builtin("classification").split("dev")


def test_dataset_item_rejects_bad_split() -> None:
    with pytest.raises(ValueError, match="split"):
        DatasetItem(id="x", text="t", label="billing", split="validation")


# --- user files: happy path --------------------------------------------------------------


def test_user_file_with_declared_labels(tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD, name="tickets.jsonl")
    ds = load_classification_file(path, labels=LABELS)
    assert ds.name == "tickets"
    assert ds.version == "user"
    assert ds.task == "classification"
    assert ds.labels == LABELS
    assert [i.id for i in ds.items] == ["a1", "a2", "a3"]
    assert [i.id for i in ds.split("train")] == ["a1"]
    assert ds.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert ds.ref == f"tickets@user#{ds.sha256[:12]}"


def test_user_file_infers_labels_and_defaults_split(tmp_path: Path) -> None:
    lines = [
        _line("1", "refund please", "billing", None),
        "",  # blank lines are ignored
        _line("2", "cannot log in", "account", None),
        _line("3", "example", "billing", "train"),
    ]
    path = _write(tmp_path, lines)
    ds = load_classification_file(path, name="mine", version="2")
    assert ds.labels == {"account": "", "billing": ""}
    assert [i.split for i in ds.items] == ["test", "test", "train"]
    assert ds.name == "mine"
    assert ds.ref.startswith("mine@2#")


def test_user_file_accepts_str_path(tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD)
    assert len(load_classification_file(str(path)).items) == 3  # type: ignore[arg-type]


# --- user files: errors name file, line and field ----------------------------------------


def _error(path: Path, **kwargs: object) -> str:
    with pytest.raises(DatasetError) as info:
        load_classification_file(path, **kwargs)  # type: ignore[arg-type]
    message = str(info.value)
    assert str(path) in message
    return message


def test_bad_json_on_line_3(tmp_path: Path) -> None:
    path = _write(tmp_path, [GOOD[0], GOOD[1], '{"id": "a3", "text": "oops", "label": billing}'])
    message = _error(path, labels=LABELS)
    assert "line 3" in message
    assert "invalid JSON" in message
    assert "one JSON object per line" in message


def test_line_that_is_not_an_object(tmp_path: Path) -> None:
    path = _write(tmp_path, [GOOD[0], '["a", "b"]'])
    message = _error(path)
    assert "line 2" in message and "JSON object" in message


@pytest.mark.parametrize("missing", ["id", "text", "label"])
def test_missing_field(tmp_path: Path, missing: str) -> None:
    obj = {"id": "a9", "text": "hello", "label": "billing", "split": "test"}
    del obj[missing]
    path = _write(tmp_path, [GOOD[0], GOOD[1], json.dumps(obj)])
    message = _error(path, labels=LABELS)
    assert "line 3" in message
    assert f"field '{missing}'" in message
    assert "missing" in message and "Add" in message


@pytest.mark.parametrize("value", ["", "   ", 7, None])
def test_empty_or_non_string_text(tmp_path: Path, value: object) -> None:
    path = _write(tmp_path, [json.dumps({"id": "a1", "text": value, "label": "billing"})])
    message = _error(path)
    assert "line 1" in message and "field 'text'" in message


def test_bad_split(tmp_path: Path) -> None:
    path = _write(tmp_path, [GOOD[1], _line("a9", "hi", "billing", "validation")])
    message = _error(path)
    assert "line 2" in message and "field 'split'" in message and "'train' or 'test'" in message


def test_unknown_label(tmp_path: Path) -> None:
    path = _write(tmp_path, [GOOD[0], GOOD[1], GOOD[2], _line("a4", "buy more?", "sales")])
    message = _error(path, labels=LABELS)
    assert "line 4" in message
    assert "field 'label'" in message
    assert "'sales'" in message
    assert "billing, technical, account, shipping" in message


def test_label_case_must_match(tmp_path: Path) -> None:
    path = _write(tmp_path, [_line("a1", "refund", "Billing")])
    message = _error(path, labels=LABELS)
    assert "line 1" in message and "field 'label'" in message and "case-sensitive" in message


def test_duplicate_id(tmp_path: Path) -> None:
    path = _write(tmp_path, [GOOD[0], GOOD[1], _line("a1", "another text", "shipping")])
    message = _error(path, labels=LABELS)
    assert "line 3" in message
    assert "field 'id'" in message
    assert "duplicate id 'a1'" in message
    assert "line 1" in message  # where it was first used
    assert "unique" in message


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_bytes(b"")
    message = _error(path)
    assert "empty" in message and "one JSON object per line" in message


def test_blank_lines_only_is_empty(tmp_path: Path) -> None:
    path = tmp_path / "blank.jsonl"
    path.write_text("\n  \n\n", encoding="utf-8")
    assert "empty" in _error(path)


def test_only_train_items_is_rejected(tmp_path: Path) -> None:
    path = _write(tmp_path, [GOOD[0]])
    message = _error(path)
    assert "field 'split'" in message and "test" in message


def test_same_text_in_train_and_test_is_rejected(tmp_path: Path) -> None:
    lines = [
        _line("a1", "I was charged twice", "billing", "train"),
        GOOD[1],
        _line("a3", "  i was CHARGED   twice ", "billing", "test"),
    ]
    path = _write(tmp_path, lines)
    message = _error(path, labels=LABELS)
    assert "line 3" in message and "field 'text'" in message and "line 1" in message
    assert "never appear in the test set" in message


def test_missing_file(tmp_path: Path) -> None:
    message = _error(tmp_path / "nope.jsonl")
    assert "not found" in message


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.jsonl"
    path.write_bytes('{"id": "a1", "text": "caf\u00e9", "label": "billing"}\n'.encode("latin-1"))
    assert "UTF-8" in _error(path)


def test_declared_labels_must_be_non_empty(tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD)
    with pytest.raises(DatasetError, match="non-empty mapping"):
        load_classification_file(path, labels={})
