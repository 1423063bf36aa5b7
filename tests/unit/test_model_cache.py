"""The model store as an LRU cache with a size limit: least recently used models that no
worker wants are evicted to make room; a model that cannot fit is refused, evicting
nothing."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from node_agent.errors import ModelStoreError
from node_agent.model_store import ModelStore

MiB = 2**20


def stored(store: ModelStore, sha: str, *, mib: int, used_at: float) -> None:
    path = store.path(sha)
    path.write_bytes(b"\0" * mib * MiB)
    os.utime(path, (used_at, used_at))


def test_no_limit_evicts_nothing(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    stored(store, "a" * 64, mib=3, used_at=1)
    assert store.make_room("b" * 64, size=100 * MiB, keep=()) == []


def test_least_recently_used_unwanted_models_go_first(tmp_path: Path) -> None:
    store = ModelStore(tmp_path, limit_bytes=10 * MiB)
    stored(store, "a" * 64, mib=3, used_at=100)  # oldest, but wanted
    stored(store, "b" * 64, mib=3, used_at=200)
    stored(store, "c" * 64, mib=3, used_at=300)
    evicted = store.make_room("d" * 64, size=4 * MiB, keep={"a" * 64})
    assert evicted == ["b" * 64]
    assert store.has("a" * 64) and store.has("c" * 64) and not store.has("b" * 64)
    assert store.used_bytes() + 4 * MiB <= 10 * MiB


def test_use_refreshes_a_model(tmp_path: Path) -> None:
    store = ModelStore(tmp_path, limit_bytes=7 * MiB)
    stored(store, "b" * 64, mib=3, used_at=200)
    stored(store, "c" * 64, mib=3, used_at=300)
    store.touch("b" * 64)  # b was just used: c is now the least recent
    assert store.make_room("d" * 64, size=2 * MiB, keep=()) == ["c" * 64]


def test_a_partial_download_counts_and_resumes(tmp_path: Path) -> None:
    store = ModelStore(tmp_path, limit_bytes=10 * MiB)
    stored(store, "b" * 64, mib=4, used_at=200)
    store.write_chunk("d" * 64, offset=0, data=b"\0" * 5 * MiB, total_size=6 * MiB)
    assert store.make_room("d" * 64, size=6 * MiB, keep=()) == [], "1 MiB more still fits"


def test_a_model_that_cannot_fit_is_refused_and_nothing_is_evicted(tmp_path: Path) -> None:
    store = ModelStore(tmp_path, limit_bytes=8 * MiB)
    stored(store, "a" * 64, mib=5, used_at=100)
    stored(store, "b" * 64, mib=2, used_at=200)
    with pytest.raises(ModelStoreError, match=r"does not fit the model cache limit of 8 MiB.*"
                                              r"in use take 5 MiB"):
        store.make_room("d" * 64, size=4 * MiB, keep={"a" * 64})
    assert store.has("a" * 64) and store.has("b" * 64)


def test_a_stored_model_is_checked_once_per_run_and_deleted_if_corrupt(
        tmp_path: Path) -> None:
    content = b"GGUF" + bytes(range(256)) * 64
    sha = hashlib.sha256(content).hexdigest()
    store = ModelStore(tmp_path)
    store.path(sha).write_bytes(content)
    assert store.verify(sha)
    store.path(sha).write_bytes(content[:-1] + b"!")  # corrupted after the check
    assert store.verify(sha), "checked once per run, not before every worker start"
    fresh = ModelStore(tmp_path)  # the next run checks again
    assert not fresh.verify(sha) and not fresh.has(sha)
    assert not fresh.verify(sha)  # gone: nothing to check
