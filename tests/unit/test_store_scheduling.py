"""The store's side of scheduling, on SQLite and PostgreSQL: leasing in the scheduler's
job order, backup copies (first result wins), requeues that keep a running copy, orphaned
leases, and the queue view the scheduler reads."""

from __future__ import annotations

import time
from datetime import timedelta

from sqlalchemy import update

from coordinator import store as st
from coordinator.db import WorkItemRow, utcnow
from tests.unit.test_store import make_job, score


def backed_up(store: st.Store) -> tuple[int, WorkItemRow, WorkItemRow]:
    """A job of one item leased to node 1 with a backup copy on node 2."""
    job = make_job(store, ["a"])
    first = st.lease_next(store, model="gemma", node_id=1, lease_s=60)
    assert first is not None
    copy = st.lease_backup(store, item_id=first.id, node_id=2, lease_s=60)
    assert copy is not None and copy.backup_lease_id not in (None, first.lease_id)
    return job, first, copy


def result(store: st.Store, item: WorkItemRow, lease_id: str, *, node_id: int,
           error: str | None = None) -> st.Recorded:
    return st.complete_item(store, item_id=item.id, lease_id=lease_id, node_id=node_id,
                            output="billing", measurement=None, error=error, scorer=score)


def test_lease_next_follows_the_schedulers_job_order(store: st.Store) -> None:
    older = make_job(store, ["a"], name="older")
    newer = make_job(store, ["b"], name="newer")
    item = st.lease_next(store, model="gemma", node_id=1, lease_s=60, job_ids=(newer, older))
    assert item is not None and item.job_id == newer
    # a job in the order that has nothing left is passed over; no order: the oldest job
    item = st.lease_next(store, model="gemma", node_id=1, lease_s=60, job_ids=(newer,))
    assert item is not None and item.job_id == older


def test_within_a_job_the_largest_items_are_leased_first_then_the_oldest(
        store: st.Store) -> None:
    long_prompt = "x" * 400
    params = {"max_tokens": 8}
    job = st.create_job(store, name="j", spec={}, items=[
        st.NewWorkItem(model="gemma", task="classification", dataset="d", item_key=k,
                       repeat=0, prompt=p, reference={}, params=params)
        for k, p in (("short-1", "hi"), ("long", long_prompt), ("short-2", "yo"))]).id
    order = []
    while (item := st.lease_next(store, model="gemma", node_id=1, lease_s=60)) is not None:
        order.append(item.item_key)
    assert order == ["long", "short-1", "short-2"]
    hints = {i.item_key: -i.lease_rank for i in st.job_items(store, job_id=job)}
    assert hints == {"long": 100 + 8 * st.DECODE_COST, "short-1": 8 * st.DECODE_COST,
                     "short-2": 8 * st.DECODE_COST}


def test_the_first_result_of_two_copies_wins_and_names_the_other_to_cancel(
        store: st.Store) -> None:
    job, first, copy = backed_up(store)
    won = result(store, copy, copy.backup_lease_id or "", node_id=2)
    assert won.accepted and won.cancel == (1, first.lease_id)
    late = result(store, first, first.lease_id or "", node_id=1)
    assert not late.accepted and store.discarded_results == 1
    (row,) = st.job_items(store, job_id=job)
    assert (row.status, row.node_id, row.lease_id, row.backup_lease_id) == (
        "done", 2, None, None)
    assert st.get_job(store, job_id=job).state == "finished"


def test_the_original_copy_may_win_too(store: st.Store) -> None:
    _job, first, copy = backed_up(store)
    won = result(store, first, first.lease_id or "", node_id=1)
    assert won.cancel == (2, copy.backup_lease_id)


def test_an_item_has_two_copies_at_most_and_never_two_on_one_node(store: st.Store) -> None:
    _job, first, _copy = backed_up(store)
    assert st.lease_backup(store, item_id=first.id, node_id=3, lease_s=60) is None
    make_job(store, ["b"], name="other")
    other = st.lease_next(store, model="gemma", node_id=1, lease_s=60)
    assert other is not None
    assert st.lease_backup(store, item_id=other.id, node_id=1, lease_s=60) is None


def test_a_failed_copy_ends_while_the_other_runs_on(store: st.Store) -> None:
    job, first, copy = backed_up(store)
    failed = result(store, first, first.lease_id or "", node_id=1, error="worker crashed")
    assert failed.accepted and failed.cancel is None
    (row,) = st.job_items(store, job_id=job)
    assert (row.status, row.lease_id, row.lease_node, row.backup_lease_id) == (
        "leased", copy.backup_lease_id, 2, None)
    assert result(store, row, row.lease_id or "", node_id=2).accepted


def test_a_lost_node_ends_its_copy_and_the_item_stays_with_the_other(
        store: st.Store) -> None:
    job, first, copy = backed_up(store)
    assert st.requeue_node_leases(store, node_id=1) == 0  # its copy runs on node 2
    (row,) = st.job_items(store, job_id=job)
    assert (row.status, row.lease_id, row.lease_node) == ("leased", copy.backup_lease_id, 2)
    assert st.requeue_node_leases(store, node_id=2) == 1  # now nobody runs it
    (row,) = st.job_items(store, job_id=job)
    assert (row.status, row.lease_id, row.backup_lease_id) == ("pending", None, None)


def test_an_expired_copy_ends_and_the_other_runs_on(store: st.Store) -> None:
    job, _first, copy = backed_up(store)
    with store.session.begin() as s:
        s.execute(update(WorkItemRow).values(lease_deadline=utcnow() - timedelta(seconds=1)))
    assert st.requeue_expired(store) == 0
    (row,) = st.job_items(store, job_id=job)
    assert (row.status, row.lease_id) == ("leased", copy.backup_lease_id)
    with store.session.begin() as s:
        s.execute(update(WorkItemRow).values(lease_deadline=utcnow() - timedelta(seconds=1)))
    assert st.requeue_expired(store) == 1
    assert st.job_items(store, job_id=job)[0].status == "pending"


def test_leases_of_nodes_that_are_gone_are_requeued_but_live_ones_kept(
        store: st.Store) -> None:
    make_job(store, ["a", "b", "c"])
    for node_id in (1, 2, 3):
        assert st.lease_next(store, model="gemma", node_id=node_id, lease_s=60) is not None
    assert st.requeue_orphans(store, live={2}) == 2
    leased = [i for i in st.job_items(store, job_id=1) if i.status == "leased"]
    assert [i.lease_node for i in leased] == [2]


def test_cancelling_a_job_ends_both_copies(store: st.Store) -> None:
    job, _first, _copy = backed_up(store)
    st.cancel_job(store, job_id=job)
    (row,) = st.job_items(store, job_id=job)
    assert (row.status, row.lease_id, row.backup_lease_id, row.backup_node) == (
        "cancelled", None, None, None)


def test_the_queue_view_counts_pending_items_per_model_and_items_in_flight(
        store: st.Store) -> None:
    first = st.create_job(store, name="first", spec={"priority": 3}, items=[
        *(st.NewWorkItem(model=m, task="classification", dataset="d", item_key=k, repeat=0,
                         prompt="p", reference={}, params={})
          for m, k in (("gemma", "a"), ("gemma", "b"), ("qwen", "a")))]).id
    done = make_job(store, ["x"], name="done")
    assert st.lease_next(store, model="gemma", node_id=1, lease_s=60, job_ids=(first,))
    item = st.lease_next(store, model="gemma", node_id=1, lease_s=60, job_ids=(done,))
    assert item is not None and item.job_id == done
    assert result(store, item, item.lease_id or "", node_id=1).accepted
    (view,) = st.queue_view(store)  # the finished job is not in it
    assert (view.id, view.priority, dict(view.pending), view.leased) == (
        first, 3, {"gemma": 1, "qwen": 1}, 1)
    (lease,) = st.open_leases(store, model="gemma", lease_s=60)
    assert lease.job_id == first and lease.node_id == 1 and not lease.backed_up
    assert abs(lease.started - time.time()) < 60  # started on the UNIX clock
