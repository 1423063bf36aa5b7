"""The store's read-modify-writes under concurrent callers, on SQLite and on PostgreSQL.

PostgreSQL runs transactions side by side (READ COMMITTED), so these are the tests that
show its row locks are right: threads start together at a barrier and race for the same
rows; rounds repeat the race. No test reads a clock.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy import select

from coordinator import store as st
from coordinator.db import WorkItemRow
from coordinator.errors import ConflictError

T = TypeVar("T")
THREADS = 6


def new_items(keys: list[str]) -> list[st.NewWorkItem]:
    return [st.NewWorkItem(model="gemma", task="classification", dataset="ds@1#abc",
                           item_key=key, repeat=0, prompt=f"prompt {key}",
                           reference={"label": "billing"}, params={}) for key in keys]


def score(item: WorkItemRow, output: str) -> tuple[str | None, dict[str, Any]]:
    return output, {"correct": output == item.reference["label"]}


def together(calls: list[Callable[[], T]]) -> list[T | BaseException]:
    """Run each call in its own thread, all released at once; their results or errors."""
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], T]) -> T | BaseException:
        barrier.wait(timeout=30)
        try:
            return call()
        except Exception as exc:  # returned to the test, which asserts on it
            return exc

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


def test_concurrent_lease_next_never_leases_an_item_twice(store: st.Store) -> None:
    job = st.create_job(store, name="j", spec={}, items=new_items([f"k{i}" for i in range(240)]))

    def lease_until_empty() -> list[tuple[int, str]]:
        leased = []
        while (item := st.lease_next(store, model="gemma", node_id=1, lease_s=60)) is not None:
            assert item.lease_id is not None
            leased.append((item.id, item.lease_id))
        return leased

    results = together([lease_until_empty] * THREADS)
    leases = [lease for result in results for lease in _ok(result)]
    ids = [item_id for item_id, _ in leases]
    assert len(ids) == len(set(ids)) == 240
    items = {i.id: i for i in st.job_items(store, job_id=job.id)}
    assert set(ids) == set(items)
    for item_id, lease_id in leases:
        assert (items[item_id].status, items[item_id].attempts) == ("leased", 1)
        assert items[item_id].lease_id == lease_id


def test_one_result_of_a_lease_sent_twice_at_once_is_recorded(store: st.Store) -> None:
    st.create_job(store, name="j", spec={}, items=new_items([f"k{i}" for i in range(10)]))
    for round_ in range(10):
        item = st.lease_next(store, model="gemma", node_id=1, lease_s=60)
        assert item is not None and item.lease_id is not None
        before = store.discarded_results

        def complete(item: WorkItemRow, output: str) -> bool:
            return st.complete_item(store, item_id=item.id, lease_id=item.lease_id or "",
                                    node_id=1, output=output, measurement=None, error=None,
                                    scorer=score)

        results = together([partial(complete, item, "billing"),
                            partial(complete, item, "account")])
        assert sorted(bool(_ok(r)) for r in results) == [False, True], f"round {round_}"
        assert store.discarded_results == before + 1
        done = st.get_item(store, item_id=item.id)
        assert done is not None and done.status == "done"
        assert done.output in ("billing", "account")


def test_results_closing_the_last_items_together_finish_the_job(store: st.Store) -> None:
    for round_ in range(10):
        job = st.create_job(store, name=f"r{round_}", spec={}, items=new_items(["a", "b"]))
        first = st.lease_next(store, model="gemma", node_id=1, lease_s=60)
        second = st.lease_next(store, model="gemma", node_id=2, lease_s=60)
        assert first is not None and second is not None

        def complete(item: WorkItemRow) -> bool:
            return st.complete_item(store, item_id=item.id, lease_id=item.lease_id or "",
                                    node_id=1, output="billing", measurement=None,
                                    error=None, scorer=score)

        results = together([partial(complete, first), partial(complete, second)])
        assert [bool(_ok(r)) for r in results] == [True, True]
        assert st.get_job(store, job_id=job.id).state == "finished", f"round {round_}"


def test_a_new_node_registered_twice_at_once_is_pinned_to_one_key(store: st.Store) -> None:
    for round_ in range(10):
        name = f"pi-{round_}"

        def register(name: str, key: str) -> st.NodeRow:
            return st.upsert_node(store, name=name, facts={}, runtime="process",
                                  public_key=key)

        results = together([partial(register, name, "A" * 40),
                            partial(register, name, "B" * 40)])
        refused = [r for r in results if isinstance(r, ConflictError)]
        nodes = [r for r in results if isinstance(r, st.NodeRow)]
        assert len(refused) == 1 and len(nodes) == 1, results
        (stored,) = [n for n in st.list_nodes(store) if n.name == name]
        assert stored.public_key == nodes[0].public_key


def test_the_same_model_added_twice_at_once_is_registered_once(store: st.Store) -> None:
    def add(name: str) -> st.ModelRow:
        return st.add_model(store, name=name, sha256="a" * 64, size=3 * 2**30,
                            path="/models/m.gguf", threads=2, n_ctx=2048)

    results = together([partial(add, "gemma")] * 3 + [partial(add, "gemma-copy")])
    assert all(not isinstance(r, BaseException) or "already registered" in str(r)
               for r in results), results
    (model,) = st.list_models(store)
    assert model.size == 3 * 2**30  # past 2 GiB: BIGINT on PostgreSQL


def _ok(result: T | BaseException) -> T:
    if isinstance(result, BaseException):
        raise result
    return result


def test_sqlite_readers_hold_no_lock_and_writers_take_it_first(tmp_path: Path) -> None:
    """A read (a report over a big job, say) must not stall the hub's writes: while one is
    open another connection takes the write lock at once. A write session holds the
    lock from its start, so it never fails upgrading a read to a write."""
    path = tmp_path / "s.db"
    store = st.Store(f"sqlite:///{path}")
    st.create_job(store, name="j", spec={}, items=new_items(["a", "b"]))
    other = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        with store.read() as s:
            assert len(list(s.scalars(select(WorkItemRow)))) == 2  # its transaction is open
            other.execute("BEGIN IMMEDIATE")  # would raise "database is locked"
            other.execute("UPDATE work_items SET attempts = attempts + 1")
            other.execute("COMMIT")
        with store.session.begin() as s:
            s.scalars(select(WorkItemRow)).all()
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")
        assert [i.attempts for i in st.job_items(store, job_id=1)] == [1, 1]
    finally:
        other.close()
        store.close()
