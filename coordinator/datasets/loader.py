"""Load evaluation datasets: the built-in sets shipped with slmfleet and user files.

A dataset is a JSONL (or CSV) file with one item per line whose fields follow its task's
schema (:mod:`coordinator.datasets.schemas`), for example::

    {"id": "cls-0001", "text": "...", "label": "billing", "split": "test"}

``split`` is ``"train"`` (few-shot examples only) or ``"test"`` (scored items); the same
input never appears in both. Built-in sets live in ``builtin/`` next to this module as
``<name>.jsonl`` plus ``<name>.json`` metadata (task, version, sha256 of the JSONL bytes,
labels with descriptions for classification, the document collection for RAG) and a
``<name>.md`` card.

Every problem is reported as a :class:`~coordinator.errors.DatasetError` whose message names
the file, the line and the field, and says how to fix it.
"""

from __future__ import annotations

import csv
import difflib
import hashlib
import io
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from coordinator.datasets.schemas import (
    EXAMPLE_LINE,
    ITEM_MODELS,
    LEAK_FIELD,
    ClassificationItem,
    Document,
    Item,
    RagItem,
)
from coordinator.errors import DatasetError

BUILTIN_DIR: Path = Path(__file__).resolve().parent / "builtin"
BUILTIN_PREFIX = "builtin:"
SPLITS: frozenset[str] = frozenset({"train", "test"})
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_DOCUMENT_EXAMPLE = '{"id": "doc-1", "title": "...", "text": "..."}'

DatasetItem = ClassificationItem  # the classification item, by its historical name


@dataclass(frozen=True)
class Dataset:
    """A validated dataset: metadata plus items in file order (and documents for RAG)."""

    name: str
    task: str
    version: str
    sha256: str
    labels: dict[str, str] = field(hash=False)
    items: tuple[Any, ...]
    documents: tuple[Document, ...] = ()

    def split(self, name: str) -> tuple[Any, ...]:
        """Items of one split (``"train"`` or ``"test"``), in file order."""
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; use one of {sorted(SPLITS)}")
        return tuple(item for item in self.items if item.split == name)

    @property
    def ref(self) -> str:
        """Stable reference recorded with results, e.g. ``classification@1.0.0#642a23a141d1``."""
        return f"{self.name}@{self.version}#{self.sha256[:12]}"


def builtin_names() -> list[str]:
    """Names of the built-in datasets (each has ``<name>.json`` metadata), sorted."""
    if not BUILTIN_DIR.is_dir():
        return []
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.json") if p.is_file())


def load_builtin(name: str) -> Dataset:
    """Load a built-in dataset by name (``"classification"`` or ``"builtin:classification"``).

    Verifies the sha256 recorded in the metadata against the JSONL bytes (and the
    document collection's bytes for RAG).
    """
    bare = name.removeprefix(BUILTIN_PREFIX).strip()
    names = builtin_names()
    if bare not in names:
        close = difflib.get_close_matches(bare, names, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        available = ", ".join(names) if names else "(none installed)"
        raise DatasetError(
            f"unknown built-in dataset {name!r}.{hint} Available built-in datasets: {available}. "
            f"Use one of these names, or pass the path of your own JSONL file."
        )

    meta_path = BUILTIN_DIR / f"{bare}.json"
    meta = _read_metadata(meta_path, expected_name=bare)
    raw = _verified_bytes(BUILTIN_DIR / meta["file"], meta["sha256"], meta_path, "sha256")
    documents: tuple[Document, ...] = ()
    docs_raw: bytes | None = None
    if meta["task"] == "rag":
        docs_raw = _verified_bytes(BUILTIN_DIR / meta["documents"], meta["documents_sha256"],
                                   meta_path, "documents_sha256")
        documents = parse_documents(docs_raw, BUILTIN_DIR / meta["documents"])
    labels: dict[str, str] = meta.get("labels") or {}
    items = _parse_items(raw, BUILTIN_DIR / meta["file"], task=meta["task"],
                         labels=labels or None, default_split=None, documents=documents)
    return Dataset(name=meta["name"], task=meta["task"], version=meta["version"],
                   sha256=_digest(raw, documents_raw=docs_raw), labels=dict(labels),
                   items=items, documents=documents)


def load_classification_file(
    path: Path,
    *,
    labels: dict[str, str] | None = None,
    name: str | None = None,
    version: str = "user",
) -> Dataset:
    """Load a user classification JSONL file (see :func:`load_dataset_file`)."""
    return load_dataset_file(path, task="classification", labels=labels, name=name,
                             version=version)


def load_dataset_file(
    path: Path,
    *,
    task: str,
    labels: dict[str, str] | None = None,
    documents: Path | None = None,
    name: str | None = None,
    version: str = "user",
) -> Dataset:
    """Load a user dataset for `task` from a JSONL, CSV or (perplexity) plain-text file.

    Items without ``split`` are test items. For classification, ``labels`` maps each
    allowed label to a description; if ``None`` the labels are inferred from the data. RAG
    needs ``documents``, a JSONL file of ``{"id", "title", "text"}``. ``name`` defaults to
    the file name without its extension; the dataset's sha256 covers every byte it uses.
    """
    path = Path(path)
    return parse_dataset(
        _read_bytes(path), task=task, where=path, labels=labels,
        documents_raw=_read_bytes(Path(documents)) if documents is not None else None,
        documents_where=Path(documents) if documents is not None else None,
        name=name if name is not None else path.stem, version=version,
        csv_format=path.suffix.lower() == ".csv", text_format=path.suffix.lower() == ".txt")


def parse_dataset(
    raw: bytes,
    *,
    task: str,
    where: Path,
    name: str,
    labels: dict[str, str] | None = None,
    documents_raw: bytes | None = None,
    documents_where: Path | None = None,
    version: str = "user",
    csv_format: bool = False,
    text_format: bool = False,
) -> Dataset:
    """Validate a dataset's bytes (JSONL; CSV with `csv_format`; plain text, one item per
    paragraph, with `text_format`); `where` names it in errors."""
    if task not in ITEM_MODELS:
        close = difflib.get_close_matches(task, list(ITEM_MODELS), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise DatasetError(f"unknown task {task!r} for dataset {name!r}.{hint} Tasks: "
                           f"{', '.join(sorted(ITEM_MODELS))}.")
    if labels is not None:
        if task != "classification":
            raise DatasetError(f"labels: only classification datasets take labels, not {task}.")
        _check_label_mapping(labels, where=f"labels given for {where}")
    documents: tuple[Document, ...] = ()
    if task == "rag":
        if documents_raw is None:
            raise DatasetError(f"{where}: a rag dataset needs its document collection; give the "
                               'documents file (JSONL of {"id", "title", "text"}).')
        documents = parse_documents(documents_raw, documents_where or where)
    if text_format and task != "perplexity":
        raise DatasetError(f"{where}: a plain-text file is a perplexity dataset, not {task}; "
                           "give JSONL or CSV in the task's schema.")
    lines = _csv_to_jsonl(raw, where) if csv_format else \
        _text_to_jsonl(raw, where) if text_format else raw
    items = _parse_items(lines, where, task=task, labels=labels, default_split="test",
                         documents=documents)
    if task == "classification" and labels is None:
        labels = {label: "" for label in sorted(
            {item.label for item in items if isinstance(item, ClassificationItem)})}
    return Dataset(name=name, task=task, version=version,
                   sha256=_digest(raw, documents_raw=documents_raw if documents else None),
                   labels=dict(labels or {}), items=items, documents=documents)


def parse_documents(raw: bytes, path: Path) -> tuple[Document, ...]:
    """Validate a RAG document collection (JSONL of ``{"id", "title", "text"}``)."""
    documents: list[Document] = []
    seen: dict[str, int] = {}
    for lineno, obj in _json_lines(raw, path, example=_DOCUMENT_EXAMPLE):
        try:
            document = Document.model_validate(obj)
        except ValidationError as exc:
            raise DatasetError(_validation_message(path, lineno, exc, task=None)) from None
        if document.id in seen:
            raise DatasetError(_line_error(path, lineno, "id", f"duplicate document id "
                                           f"{document.id!r} (first used on line "
                                           f"{seen[document.id]})",
                                           "Give every document a unique id."))
        seen[document.id] = lineno
        documents.append(document)
    if not documents:
        raise DatasetError(f"{path}: the document collection is empty; add one JSON object "
                           "per line.")
    return tuple(documents)


def _digest(raw: bytes, *, documents_raw: bytes | None) -> str:
    """sha256 of the items' bytes, or of both files' sha256 digests when there are documents."""
    if documents_raw is None:
        return hashlib.sha256(raw).hexdigest()
    both = hashlib.sha256(raw).digest() + hashlib.sha256(documents_raw).digest()
    return hashlib.sha256(both).hexdigest()


def _verified_bytes(path: Path, expected: str, meta_path: Path, key: str) -> bytes:
    raw = _read_bytes(path)
    digest = hashlib.sha256(raw).hexdigest()
    if digest != expected:
        raise DatasetError(
            f"{path}: sha256 is {digest} but {meta_path} (field {key!r}) records "
            f"{expected}; the built-in dataset was modified or corrupted. Reinstall "
            f"slmfleet, or if you changed the data on purpose, bump 'version' and update "
            f"{key!r}."
        )
    return raw


def _text_to_jsonl(raw: bytes, path: Path) -> bytes:
    """Plain text, one test item per paragraph (blank-line separated)."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}: not valid UTF-8 (byte {exc.start}); save the file as "
                           "UTF-8.") from exc
    paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", text) if p.strip()]
    return "\n".join(json.dumps({"id": f"p{i:04d}", "text": p}, ensure_ascii=False)
                     for i, p in enumerate(paragraphs, 1)).encode()


def _csv_to_jsonl(raw: bytes, path: Path) -> bytes:
    """CSV with a header row of the task's fields; list fields hold a JSON list (or
    `|`-separated values). Each row keeps the number of the CSV line it ends on (the header
    is line 1), so errors name lines of the file the user wrote."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}: not valid UTF-8 (byte {exc.start}); save the file as "
                           "UTF-8.") from exc
    lines: list[str] = []
    reader = csv.DictReader(io.StringIO(text))
    for row in reader:
        if None in row:  # DictReader's key for cells beyond the header
            raise DatasetError(_line_error(
                path, reader.line_num, None,
                f"{len(reader.fieldnames or ()) + len(row[None])} values but the header has "
                f"{len(reader.fieldnames or ())} columns",
                'Quote values that contain commas, e.g. "Hello, world".'))
        obj: dict[str, Any] = {k: v for k, v in row.items() if v != ""}
        for key in ("entities", "answers", "doc_ids"):
            if key in obj:
                value = obj[key]
                try:
                    parsed = json.loads(value)
                except json.JSONDecodeError:
                    parsed = None
                # a lone number ("12") or word is one value, not JSON: only a list is JSON here
                obj[key] = parsed if isinstance(parsed, list) else [
                    part.strip() for part in value.split("|") if part.strip()]
        lines += [""] * (reader.line_num - 1 - len(lines))  # blank lines are skipped
        lines.append(json.dumps(obj, ensure_ascii=False))
    return "\n".join(lines).encode()


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise DatasetError(f"{path}: file not found; check the path.") from None
    except IsADirectoryError:
        raise DatasetError(f"{path}: is a directory; give the path of a JSONL file.") from None
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read file ({exc}); check its permissions.") from exc


def _check_label_mapping(labels: Any, *, where: str) -> None:
    if not isinstance(labels, dict) or not labels:
        raise DatasetError(
            f"{where}: 'labels' must be a non-empty mapping of label name to description, "
            f'e.g. {{"billing": "payments, invoices, refunds"}}.'
        )
    for key, desc in labels.items():
        if not isinstance(key, str) or not key.strip() or key != key.strip():
            raise DatasetError(
                f"{where}: label {key!r} must be a non-empty string without surrounding spaces."
            )
        if not isinstance(desc, str):
            raise DatasetError(
                f"{where}: description of label {key!r} must be a string, got "
                f'{type(desc).__name__}; use "" if there is no description.'
            )


def _read_metadata(path: Path, *, expected_name: str) -> dict[str, Any]:
    try:
        meta = json.loads(_read_bytes(path).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{path}: metadata is not valid UTF-8 JSON ({exc}).") from exc
    if not isinstance(meta, dict):
        raise DatasetError(f"{path}: metadata must be a JSON object.")
    required = ["name", "task", "version", "file", "sha256"]
    if meta.get("task") == "rag":
        required += ["documents", "documents_sha256"]
    for key in required:
        value = meta.get(key)
        if not isinstance(value, str) or not value.strip():
            raise DatasetError(f"{path}: field {key!r} must be a non-empty string.")
    if meta["task"] not in ITEM_MODELS:
        raise DatasetError(f"{path}: field 'task' is {meta['task']!r}; use one of "
                           f"{', '.join(sorted(ITEM_MODELS))}.")
    if meta["name"] != expected_name:
        raise DatasetError(
            f"{path}: field 'name' is {meta['name']!r} but the file is named "
            f"{expected_name!r}.json; make them match."
        )
    for key in ("file", "documents"):
        if key in meta and Path(meta[key]).name != meta[key]:
            raise DatasetError(
                f"{path}: field {key!r} must be a plain file name in {BUILTIN_DIR}, "
                f"got {meta[key]!r}."
            )
    for key in ("sha256", "documents_sha256"):
        if key in meta and not _SHA256_RE.match(meta[key]):
            raise DatasetError(
                f"{path}: field {key!r} must be 64 lowercase hex digits, got {meta[key]!r}."
            )
    if meta["task"] == "classification":
        _check_label_mapping(meta.get("labels"), where=f"{path}: field 'labels'")
    return meta


def _line_error(path: Path, lineno: int, field_name: str | None, problem: str, fix: str) -> str:
    where = f"{path}: line {lineno}"
    if field_name is not None:
        where += f": field {field_name!r}"
    return f"{where}: {problem}. {fix}"


def _normalise_text(text: str) -> str:
    return " ".join(text.split()).casefold()


def _json_lines(raw: bytes, path: Path, *, example: str) -> list[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line; errors name the line and the fix."""
    try:
        content = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DatasetError(
            f"{path}: not valid UTF-8 (byte {exc.start}); save the file as UTF-8."
        ) from exc
    objects = []
    for lineno, line in enumerate(content.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(_line_error(
                path, lineno, None, f"invalid JSON ({exc.msg} at column {exc.colno})",
                f"Write exactly one JSON object per line, e.g. {example}.")) from None
        if not isinstance(obj, dict):
            raise DatasetError(_line_error(
                path, lineno, None, f"expected a JSON object, got {type(obj).__name__}",
                f"Write one object per line, e.g. {example}."))
        objects.append((lineno, obj))
    return objects


def _validation_message(path: Path, lineno: int, exc: ValidationError, *,
                        task: str | None) -> str:
    error = exc.errors()[0]
    loc = [str(part) for part in error["loc"]]
    field_name = ".".join(loc) if loc else None
    value = error.get("input")
    if error["type"] == "missing":
        kind = "a list" if loc and loc[-1] in ("entities", "answers", "doc_ids") else \
            "a non-empty string"
        return _line_error(path, lineno, field_name, "missing", f"Add {kind} {loc[-1]!r}.")
    if error["type"] == "extra_forbidden":
        expected = ", ".join(ITEM_MODELS[task].model_fields) if task else "id, title, text"
        return _line_error(path, lineno, field_name, "unknown field",
                           f"Remove it; the fields are: {expected}.")
    if loc == ["split"]:
        return _line_error(path, lineno, "split", f"must be 'train' or 'test', got {value!r}",
                           "Use 'test' for scored items and 'train' for few-shot examples.")
    if error["type"] in ("string_type", "string_too_short", "string_pattern_mismatch") and \
            loc and loc[-1] not in ("src_lang", "tgt_lang", "type"):
        return _line_error(path, lineno, field_name,
                           f"must be a non-empty string, got {value!r}",
                           f"Set {loc[-1]!r} to a non-empty string.")
    message = str(error["msg"]).removeprefix("Value error, ")
    if not isinstance(value, dict):
        message += f" (got {value!r})"
    example = EXAMPLE_LINE[task] if task else _DOCUMENT_EXAMPLE
    return _line_error(path, lineno, field_name, message, f"Follow the schema, e.g. {example}.")


def _parse_items(
    raw: bytes,
    path: Path,
    *,
    task: str,
    labels: Mapping[str, str] | None,
    default_split: str | None,
    documents: tuple[Document, ...] = (),
) -> tuple[Item, ...]:
    """Parse and validate JSONL bytes; ``default_split=None`` makes ``split`` required.

    RAG items' ``doc_ids`` must name documents of ``documents``.
    """
    model = ITEM_MODELS[task]
    known_documents = {d.id for d in documents}
    leak_field = LEAK_FIELD[task]
    items: list[Item] = []
    id_lines: dict[str, int] = {}
    seen_inputs: dict[str, tuple[int, str]] = {}  # normalised input -> (line, split)
    for lineno, obj in _json_lines(raw, path, example=EXAMPLE_LINE[task]):
        if "split" not in obj and default_split is not None:
            obj["split"] = default_split
        try:
            item: Item = model.model_validate(obj)  # type: ignore[assignment]
        except ValidationError as exc:
            raise DatasetError(_validation_message(path, lineno, exc, task=task)) from None
        if labels is not None and isinstance(item, ClassificationItem) \
                and item.label not in labels:
            raise DatasetError(_line_error(
                path, lineno, "label",
                f"unknown label {item.label!r}; allowed labels are {', '.join(labels)}",
                "Fix the label (labels are case-sensitive) or add it to the declared labels."))
        if isinstance(item, RagItem):
            missing = [doc_id for doc_id in item.doc_ids if doc_id not in known_documents]
            if missing:
                raise DatasetError(_line_error(
                    path, lineno, "doc_ids", f"{missing} not in the document collection",
                    "Fix the ids or add the documents."))
        if item.id in id_lines:
            raise DatasetError(_line_error(
                path, lineno, "id",
                f"duplicate id {item.id!r} (first used on line {id_lines[item.id]})",
                "Give every item a unique id."))
        key = _normalise_text(getattr(item, leak_field))
        seen = seen_inputs.get(key)
        if seen is not None and seen[1] != item.split:
            raise DatasetError(_line_error(
                path, lineno, leak_field,
                f"the same {leak_field} is in split {item.split!r} here and in split "
                f"{seen[1]!r} on line {seen[0]}",
                "Remove it from one split: few-shot examples must never appear in the "
                "test set."))
        id_lines[item.id] = lineno
        seen_inputs.setdefault(key, (lineno, item.split))
        items.append(item)

    if not items:
        raise DatasetError(
            f"{path}: file is empty (no items). Add one JSON object per line, e.g. "
            f"{EXAMPLE_LINE[task]}."
        )
    if not any(item.split == "test" for item in items):
        raise DatasetError(
            f"{path}: field 'split': no item has split 'test', so there is nothing to score. "
            f'Mark the items to evaluate with "split": "test".'
        )
    return tuple(items)
