"""Load evaluation datasets: the built-in sets shipped with slmfleet and user JSONL files.

A dataset is a JSONL file with one object per line::

    {"id": "cls-0001", "text": "...", "label": "billing", "split": "test"}

``split`` is ``"train"`` (few-shot examples only) or ``"test"`` (scored items). Built-in sets
live in ``builtin/`` next to this module as ``<name>.jsonl`` plus ``<name>.json`` metadata
(labels with descriptions, version, sha256 of the JSONL bytes) and a ``<name>.md`` card.

Every problem is reported as a :class:`~coordinator.errors.DatasetError` whose message names
the file, the line and the field, and says how to fix it.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coordinator.errors import DatasetError

BUILTIN_DIR: Path = Path(__file__).resolve().parent / "builtin"
BUILTIN_PREFIX = "builtin:"
SPLITS: frozenset[str] = frozenset({"train", "test"})
_ITEM_FIELDS = ("id", "text", "label")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class DatasetItem:
    """One labelled message; ``split`` is ``"train"`` or ``"test"``."""

    id: str
    text: str
    label: str
    split: str

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ValueError(f"split must be one of {sorted(SPLITS)}, got {self.split!r}")


@dataclass(frozen=True)
class Dataset:
    """A validated dataset: metadata plus items in file order."""

    name: str
    task: str
    version: str
    sha256: str
    labels: dict[str, str] = field(hash=False)
    items: tuple[DatasetItem, ...]

    def split(self, name: str) -> tuple[DatasetItem, ...]:
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

    Verifies the sha256 recorded in the metadata against the JSONL bytes.
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
    data_path = BUILTIN_DIR / meta["file"]
    raw = _read_bytes(data_path)
    digest = hashlib.sha256(raw).hexdigest()
    if digest != meta["sha256"]:
        raise DatasetError(
            f"{data_path}: sha256 is {digest} but {meta_path} (field 'sha256') records "
            f"{meta['sha256']}; the built-in dataset was modified or corrupted. Reinstall "
            f"slmfleet, or if you changed the data on purpose, bump 'version' and update 'sha256'."
        )
    labels: dict[str, str] = meta["labels"]
    items = _parse_items(raw, data_path, labels=labels, default_split=None)
    return Dataset(
        name=meta["name"],
        task=meta["task"],
        version=meta["version"],
        sha256=digest,
        labels=dict(labels),
        items=items,
    )


def load_classification_file(
    path: Path,
    *,
    labels: dict[str, str] | None = None,
    name: str | None = None,
    version: str = "user",
) -> Dataset:
    """Load a user classification JSONL file.

    ``labels`` maps each allowed label to a description; if ``None`` the labels are inferred
    from the data (sorted, with empty descriptions). Items without ``split`` are test items.
    ``name`` defaults to the file name without its extension.
    """
    path = Path(path)
    if labels is not None:
        _check_label_mapping(labels, where=f"labels given for {path}")
    raw = _read_bytes(path)
    items = _parse_items(raw, path, labels=labels, default_split="test")
    if labels is None:
        labels = {label: "" for label in sorted({item.label for item in items})}
    return Dataset(
        name=name if name is not None else path.stem,
        task="classification",
        version=version,
        sha256=hashlib.sha256(raw).hexdigest(),
        labels=dict(labels),
        items=items,
    )


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
    for key in ("name", "task", "version", "file", "sha256"):
        value = meta.get(key)
        if not isinstance(value, str) or not value.strip():
            raise DatasetError(f"{path}: field {key!r} must be a non-empty string.")
    if meta["name"] != expected_name:
        raise DatasetError(
            f"{path}: field 'name' is {meta['name']!r} but the file is named "
            f"{expected_name!r}.json; make them match."
        )
    if Path(meta["file"]).name != meta["file"]:
        raise DatasetError(
            f"{path}: field 'file' must be a plain file name in {BUILTIN_DIR}, "
            f"got {meta['file']!r}."
        )
    if not _SHA256_RE.match(meta["sha256"]):
        raise DatasetError(
            f"{path}: field 'sha256' must be 64 lowercase hex digits, got {meta['sha256']!r}."
        )
    _check_label_mapping(meta.get("labels"), where=f"{path}: field 'labels'")
    return meta


def _line_error(path: Path, lineno: int, field_name: str | None, problem: str, fix: str) -> str:
    where = f"{path}: line {lineno}"
    if field_name is not None:
        where += f": field {field_name!r}"
    return f"{where}: {problem}. {fix}"


def _normalise_text(text: str) -> str:
    return " ".join(text.split()).casefold()


def _parse_items(
    raw: bytes,
    path: Path,
    *,
    labels: dict[str, str] | None,
    default_split: str | None,
) -> tuple[DatasetItem, ...]:
    """Parse and validate JSONL bytes; ``default_split=None`` makes ``split`` required."""
    try:
        content = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DatasetError(
            f"{path}: not valid UTF-8 (byte {exc.start}); save the file as UTF-8."
        ) from exc

    items: list[DatasetItem] = []
    id_lines: dict[str, int] = {}
    text_lines: dict[str, tuple[int, str]] = {}  # normalised text -> (line, split)
    for lineno, line in enumerate(content.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(
                _line_error(
                    path,
                    lineno,
                    None,
                    f"invalid JSON ({exc.msg} at column {exc.colno})",
                    'Write exactly one JSON object per line, e.g. {"id": "x1", "text": "...", '
                    '"label": "billing", "split": "test"}.',
                )
            ) from None
        if not isinstance(obj, dict):
            raise DatasetError(
                _line_error(
                    path,
                    lineno,
                    None,
                    f"expected a JSON object, got {type(obj).__name__}",
                    'Write one object per line with fields "id", "text", "label" and "split".',
                )
            )

        values: dict[str, str] = {}
        for key in _ITEM_FIELDS:
            value = obj.get(key)
            if value is None:
                raise DatasetError(
                    _line_error(path, lineno, key, "missing", f"Add a non-empty string {key!r}.")
                )
            if not isinstance(value, str) or not value.strip():
                raise DatasetError(
                    _line_error(
                        path,
                        lineno,
                        key,
                        f"must be a non-empty string, got {value!r}",
                        f"Set {key!r} to a non-empty string.",
                    )
                )
            values[key] = value

        split = obj.get("split", default_split)
        if split is None:
            raise DatasetError(
                _line_error(path, lineno, "split", "missing", 'Add "split": "train" or "test".')
            )
        if split not in SPLITS:
            raise DatasetError(
                _line_error(
                    path,
                    lineno,
                    "split",
                    f"must be 'train' or 'test', got {split!r}",
                    "Use 'test' for scored items and 'train' for few-shot examples.",
                )
            )

        item_id, label = values["id"], values["label"]
        if labels is not None and label not in labels:
            raise DatasetError(
                _line_error(
                    path,
                    lineno,
                    "label",
                    f"unknown label {label!r}; allowed labels are {', '.join(labels)}",
                    "Fix the label (labels are case-sensitive) or add it to the declared labels.",
                )
            )
        if item_id in id_lines:
            raise DatasetError(
                _line_error(
                    path,
                    lineno,
                    "id",
                    f"duplicate id {item_id!r} (first used on line {id_lines[item_id]})",
                    "Give every item a unique id.",
                )
            )
        key_text = _normalise_text(values["text"])
        seen = text_lines.get(key_text)
        if seen is not None and seen[1] != split:
            raise DatasetError(
                _line_error(
                    path,
                    lineno,
                    "text",
                    f"the same text is in split {split!r} here and in split {seen[1]!r} on "
                    f"line {seen[0]}",
                    "Remove it from one split: few-shot examples must never appear in the "
                    "test set.",
                )
            )
        id_lines[item_id] = lineno
        text_lines.setdefault(key_text, (lineno, split))
        items.append(DatasetItem(id=item_id, text=values["text"], label=label, split=split))

    if not items:
        raise DatasetError(
            f"{path}: file is empty (no items). Add one JSON object per line with "
            f'fields "id", "text", "label" and "split".'
        )
    if not any(item.split == "test" for item in items):
        raise DatasetError(
            f"{path}: field 'split': no item has split 'test', so there is nothing to score. "
            f'Mark the items to evaluate with "split": "test".'
        )
    return tuple(items)
