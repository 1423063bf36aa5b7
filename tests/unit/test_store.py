"""Unit tests for the coordinator's store: nodes, models, leases, results.

Each test runs on a real SQLite file and on the real PostgreSQL test server (conftest.py).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import update

from coordinator import store as st
from coordinator.db import JobRow, WorkItemRow, utcnow
from coordinator.errors import ModelError

SHA_A = "a" * 64
SHA_B = "b" * 64


def new_item(key: str, *, model: str = "gemma") -> st.NewWorkItem:
    return st.NewWorkItem(model=model, task="classification", dataset="ds@1#abc",
                          item_key=key, repeat=0, prompt=f"prompt {key}",
                          reference={"label": "billing"}, params={"seed": 42})


def make_job(store: st.Store, keys: list[str], *, model: str = "gemma",
             name: str = "job") -> int:
    return st.create_job(store, name=name, spec={"name": name},
                         items=[new_item(k, model=model) for k in keys]).id


def score(item: WorkItemRow, output: str) -> tuple[str | None, dict[str, Any]]:
    return output.strip(), {"correct": output.strip() == item.reference["label"]}


def complete(store: st.Store, item: WorkItemRow, *, lease_id: str | None = None,
             output: str = "billing", error: str | None = None,
             measurement: dict[str, Any] | None = None) -> bool:
    return st.complete_item(store, item_id=item.id, lease_id=lease_id or item.lease_id or "",
                            node_id=1, output=output, measurement=measurement, error=error,
                            scorer=score)


def lease(store: st.Store, *, model: str = "gemma", lease_s: float = 60.0) -> WorkItemRow:
    item = st.lease_next(store, model=model, node_id=1, lease_s=lease_s)
    assert item is not None
    return item


def items_by_key(store: st.Store, job_id: int) -> dict[str, WorkItemRow]:
    return {i.item_key: i for i in st.job_items(store, job_id=job_id)}


# --- nodes ----------------------------------------------------------------------------


def test_returning_node_keeps_its_id_and_gets_new_facts(store: st.Store) -> None:
    first = st.upsert_node(store, name="pi-01", facts={"cores": 4}, runtime="process")
    other = st.upsert_node(store, name="pi-02", facts={"cores": 4}, runtime="process")
    st.mark_left(store, node_id=first.id)
    again = st.upsert_node(store, name="pi-01", facts={"cores": 8}, runtime="docker")
    assert again.id == first.id != other.id
    nodes = {n.name: n for n in st.list_nodes(store)}
    assert len(nodes) == 2
    assert nodes["pi-01"].facts == {"cores": 8}
    assert nodes["pi-01"].runtime == "docker"
    assert nodes["pi-01"].left is False


# --- models ---------------------------------------------------------------------------


def add(store: st.Store, name: str, sha: str) -> Any:
    return st.add_model(store, name=name, sha256=sha, size=10, path=f"/models/{name}.gguf",
                        threads=2, n_ctx=2048)


def test_adding_the_same_model_twice_is_idempotent(store: st.Store) -> None:
    add(store, "gemma", SHA_A)
    assert add(store, "gemma", SHA_A).sha256 == SHA_A
    assert [m.name for m in st.list_models(store)] == ["gemma"]


def test_same_name_with_another_file_is_refused(store: st.Store) -> None:
    add(store, "gemma", SHA_A)
    with pytest.raises(ModelError, match="'gemma'.*new name"):
        add(store, "gemma", SHA_B)
    assert st.list_models(store)[0].sha256 == SHA_A


def test_same_file_under_another_name_is_refused(store: st.Store) -> None:
    add(store, "gemma", SHA_A)
    with pytest.raises(ModelError, match="already registered as 'gemma'"):
        add(store, "gemma-copy", SHA_A)
    assert [m.name for m in st.list_models(store)] == ["gemma"]
    assert st.model_by_sha(store, sha256=SHA_A) is not None
    assert st.model_by_sha(store, sha256=SHA_B) is None


# --- leasing --------------------------------------------------------------------------


def test_create_job_stores_every_item_pending(store: st.Store) -> None:
    job_id = make_job(store, ["x1", "x2", "x3"])
    job = st.get_job(store, job_id=job_id)
    assert (job.state, job.total) == ("running", 3)
    assert st.job_progress(store, job_id=job_id) == {"pending": 3}


def test_lease_next_takes_the_oldest_pending_item_for_that_model(store: st.Store) -> None:
    first_job = make_job(store, ["q1"], model="qwen")
    second_job = make_job(store, ["g1", "g2"])
    make_job(store, ["g3"])

    item = lease(store, model="gemma")
    assert (item.job_id, item.item_key) == (second_job, "g1")
    assert item.status == "leased" and item.attempts == 1 and item.lease_id
    assert item.lease_deadline is not None and item.lease_deadline > utcnow()
    assert lease(store, model="gemma").item_key == "g2"
    assert lease(store, model="gemma").item_key == "g3"
    assert st.lease_next(store, model="gemma", node_id=1, lease_s=60) is None
    assert lease(store, model="qwen").job_id == first_job
    assert st.lease_next(store, model="llama", node_id=1, lease_s=60) is None


def test_lease_next_skips_jobs_that_are_not_running(store: st.Store) -> None:
    stopped = make_job(store, ["old"])
    running = make_job(store, ["new"])
    with store.session.begin() as s:
        s.execute(update(JobRow).where(JobRow.id == stopped).values(state="cancelled"))
    item = lease(store)
    assert (item.job_id, item.item_key) == (running, "new")
    assert st.lease_next(store, model="gemma", node_id=1, lease_s=60) is None


def test_each_lease_has_its_own_id(store: st.Store) -> None:
    make_job(store, ["x1", "x2"])
    assert lease(store).lease_id != lease(store).lease_id


# --- results --------------------------------------------------------------------------


def test_result_for_the_live_lease_is_recorded_once(store: st.Store) -> None:
    job_id = make_job(store, ["x1", "x2"])
    item = lease(store)
    measurement = {"ttft_s": 0.25, "e2e_s": 1.5, "completion_tokens": 2}
    assert complete(store, item, output=" billing\n", measurement=measurement)
    assert store.discarded_results == 0

    done = items_by_key(store, job_id)["x1"]
    assert (done.status, done.output, done.node_id) == ("done", " billing\n", 1)
    assert (done.prediction, done.score) == ("billing", {"correct": True})
    assert (done.ttft_s, done.e2e_s, done.completion_tokens) == (0.25, 1.5, 2)
    assert done.lease_id is None and done.finished_at is not None

    assert not complete(store, item, lease_id=item.lease_id, output="account")
    assert store.discarded_results == 1
    assert items_by_key(store, job_id)["x1"].output == " billing\n"


def test_result_with_a_wrong_lease_id_is_discarded(store: st.Store) -> None:
    job_id = make_job(store, ["x1"])
    item = lease(store)
    assert not complete(store, item, lease_id="not-the-lease")
    assert store.discarded_results == 1
    assert items_by_key(store, job_id)["x1"].status == "leased"
    assert complete(store, item)


def test_result_for_an_unknown_item_is_discarded(store: st.Store) -> None:
    assert not st.complete_item(store, item_id=999, lease_id="x", node_id=1, output="",
                                measurement=None, error=None, scorer=score)
    assert store.discarded_results == 1


def test_late_result_of_an_expired_lease_is_discarded(store: st.Store) -> None:
    job_id = make_job(store, ["x1"])
    stale = lease(store, lease_s=30)
    assert st.requeue_expired(store, now=utcnow() + timedelta(seconds=31)) == 1
    fresh = lease(store)
    assert fresh.id == stale.id and fresh.lease_id != stale.lease_id
    assert fresh.attempts == 2

    assert not complete(store, stale)
    assert store.discarded_results == 1
    assert complete(store, fresh, output="account")
    assert items_by_key(store, job_id)["x1"].output == "account"


def test_requeue_expired_only_touches_leases_past_their_deadline(store: st.Store) -> None:
    job_id = make_job(store, ["short", "lengthy", "waiting"])  # prompts of one size hint
    lease(store, lease_s=10)
    lease(store, lease_s=100)
    now = utcnow()
    assert st.requeue_expired(store, now=now) == 0
    assert st.requeue_expired(store, now=now + timedelta(seconds=50)) == 1
    items = items_by_key(store, job_id)
    assert items["short"].status == "pending"
    assert items["short"].lease_id is None and items["short"].lease_node is None
    assert items["lengthy"].status == "leased"
    assert items["waiting"].status == "pending" and items["waiting"].attempts == 0
    assert st.requeue_expired(store, now=now + timedelta(seconds=101)) == 1


def test_error_result_goes_back_to_pending_then_fails_on_the_third_attempt(
        store: st.Store) -> None:
    job_id = make_job(store, ["x1"])
    for attempt in (1, 2):
        item = lease(store)
        assert item.attempts == attempt
        assert complete(store, item, error="worker crashed")
        again = items_by_key(store, job_id)["x1"]
        assert (again.status, again.error, again.lease_id) == ("pending", "worker crashed", None)
    item = lease(store)
    assert complete(store, item, error="worker crashed again")
    failed = items_by_key(store, job_id)["x1"]
    assert (failed.status, failed.attempts, failed.error) == ("failed", 3,
                                                              "worker crashed again")
    assert st.lease_next(store, model="gemma", node_id=1, lease_s=60) is None


def test_job_finishes_when_every_item_is_done(store: st.Store) -> None:
    job_id = make_job(store, ["x1", "x2"])
    other = make_job(store, ["y1"])
    first, second = lease(store), lease(store)
    assert complete(store, first)
    assert st.get_job(store, job_id=job_id).state == "running"
    assert complete(store, second)
    job = st.get_job(store, job_id=job_id)
    assert job.state == "finished" and job.finished_at is not None
    assert st.job_progress(store, job_id=job_id) == {"done": 2}
    assert st.get_job(store, job_id=other).state == "running"


def test_job_finishes_when_its_last_item_fails_for_good(store: st.Store) -> None:
    job_id = make_job(store, ["x1"])
    for _ in range(3):
        assert complete(store, lease(store), error="boom")
    assert st.job_progress(store, job_id=job_id) == {"failed": 1}
    assert st.get_job(store, job_id=job_id).state == "finished"


def test_requeue_node_leases_returns_only_that_nodes_leases(store: st.Store) -> None:
    job_id = make_job(store, ["a", "b", "c"])
    first = st.lease_next(store, model="gemma", node_id=1, lease_s=60)
    second = st.lease_next(store, model="gemma", node_id=2, lease_s=60)
    assert first is not None and second is not None

    assert st.requeue_node_leases(store, node_id=1) == 1
    states = {i.id: (i.status, i.lease_node) for i in st.job_items(store, job_id=job_id)}
    assert states[first.id] == ("pending", None)
    assert states[second.id] == ("leased", 2)
    assert st.requeue_node_leases(store, node_id=1) == 0


def test_leasing_and_cancelling_from_two_threads_never_leaves_a_lease(
        store: st.Store) -> None:
    """lease_next (the hub) and cancel_job (an API thread) are each atomic."""
    import threading

    def lease_until_empty(started: threading.Event) -> None:
        while st.lease_next(store, model="gemma", node_id=1, lease_s=60) is not None:
            started.set()
        started.set()

    for round_ in range(5):
        job_id = make_job(store, [f"{round_}-{i}" for i in range(300)], name=f"r{round_}")
        started = threading.Event()
        worker = threading.Thread(target=lease_until_empty, args=(started,))
        worker.start()
        started.wait(timeout=30)
        st.cancel_job(store, job_id=job_id)
        worker.join(timeout=60)
        statuses = {i.status for i in st.job_items(store, job_id=job_id)}
        assert statuses <= {"leased", "cancelled"}
        leased_after_cancel = [i for i in st.job_items(store, job_id=job_id)
                               if i.status == "leased"]
        assert leased_after_cancel == [], f"round {round_}: a cancelled job kept a lease"


def test_what_sqlite_takes_postgresql_takes_too(store: st.Store) -> None:
    """Long keys (a judge job's join a model name and an item id), NUL in a model's output,
    non-finite numbers in a score, a model file past 2 GiB."""
    key, ref = "m" * 128 + "/" + "i" * 128 + "/r0", "d" * 128 + "@user#0123456789ab"
    job = st.create_job(store, name="judge of job 1 by " + "m" * 128, spec={"name": "x"},
                        items=[st.NewWorkItem(model="gemma", task="rag_judge", dataset=ref,
                                              item_key=key, repeat=0, prompt="p\x00q",
                                              reference={}, params={})])
    item = lease(store)
    assert (item.item_key, item.dataset) == (key, ref)
    assert st.complete_item(store, item_id=item.id, lease_id=item.lease_id or "", node_id=1,
                            output="yes\x00", measurement={"ttft_s": 0.5}, error=None,
                            scorer=lambda _item, out: (out, {"nll": float("inf"),
                                                             "f1": [float("nan"), 1.0]}))
    (done,) = st.job_items(store, job_id=job.id)
    nul = "\x00" if store.engine.dialect.name == "sqlite" else "\ufffd"  # PG text has no NUL
    assert (done.output, done.prediction, done.prompt) == (f"yes{nul}", f"yes{nul}", f"p{nul}q")
    assert done.score == {"nll": None, "f1": [None, 1.0]}  # JSON has no NaN or infinity
    st.add_model(store, name="big", sha256=SHA_A, size=5 * 2**30, path="/m.gguf", threads=2,
                 n_ctx=2048)
    assert [m.size for m in st.list_models(store)] == [5 * 2**30]
