"""The coordinator's store operations: nodes, models, jobs, leases and results.

Functions take a `Store` and keyword-only arguments; each runs in its own transaction.
Results are accepted exactly once: only for the live lease of a leased item; late or
duplicate results are discarded and counted.

Each read-modify-write is atomic on both backends. SQLite runs one writing transaction at
a time (BEGIN IMMEDIATE, `coordinator.db`). PostgreSQL runs them side by side at READ
COMMITTED, so here they lock the rows they read before changing them (`FOR UPDATE`;
`lease_next` skips rows that another caller holds), always a work item before its job so
that two transactions never wait for each other; and an insert that loses a race for a
unique name runs once more, to see the winner's row.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from coordinator.db import (
    DatasetRow,
    JobRow,
    ModelRow,
    NodeRow,
    WorkItemRow,
    make_engine,
    utcnow,
)
from coordinator.errors import ConflictError, DatasetError, ModelError, NotFoundError


class Store:
    """The SQL store behind the coordinator: SQLite by default, or PostgreSQL.

    Opening it brings its schema up to date (`coordinator.migrate`); a bad URL or an
    unreachable server raises `StoreError`, a store of another version `SchemaError`.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.session: sessionmaker[Session] = sessionmaker(self.engine,
                                                           expire_on_commit=False)
        self.discarded_results = 0

    def close(self) -> None:
        """Close the store's connections (a PostgreSQL server counts them)."""
        self.engine.dispose()


T = TypeVar("T")


def _once_more_if_raced(write: Callable[[], T]) -> T:
    """Run `write`; if a concurrent insert of the same unique key won (PostgreSQL), run it
    once more: it then finds the row the winner made and answers as for any existing row."""
    try:
        return write()
    except IntegrityError:
        return write()


# --- nodes --------------------------------------------------------------------------


def upsert_node(store: Store, *, name: str, facts: dict[str, Any], runtime: str,
                public_key: str | None = None) -> NodeRow:
    """Register a node by name; a returning node keeps its id (its overlay position).

    A node is pinned to the CURVE public key it first registered with: the same name from
    another key is refused (`ConflictError`) until the operator revokes the node.
    """
    def write() -> NodeRow:
        with store.session.begin() as s:
            node = s.scalar(select(NodeRow).where(NodeRow.name == name).with_for_update())
            if node is None:
                node = NodeRow(name=name, facts=facts, runtime=runtime, public_key=public_key)
                s.add(node)
            else:
                if node.public_key and public_key and node.public_key != public_key:
                    raise ConflictError(
                        f"node '{name}' is pinned to another key; if this machine was "
                        f"reinstalled, revoke the old one (slmfleet nodes revoke {node.id}) "
                        "and start the agent again")
                node.facts, node.runtime, node.left = facts, runtime, False
                node.metrics = None  # joining again: until its first status report
                node.public_key = public_key or node.public_key
            node.last_seen = utcnow()
            s.flush()
            return node

    return _once_more_if_raced(write)


def touch_nodes(store: Store, *, seen: dict[int, datetime]) -> None:
    if not seen:
        return
    with store.session.begin() as s:
        for node_id, when in seen.items():
            s.execute(update(NodeRow).where(NodeRow.id == node_id).values(last_seen=when))


def record_metrics(store: Store, *, node_id: int, metrics: dict[str, Any],
                   workers: list[dict[str, Any]], errors: list[str] | None = None) -> None:
    with store.session.begin() as s:
        s.execute(update(NodeRow).where(NodeRow.id == node_id)
                  .values(metrics=metrics, workers=workers, errors=errors or [],
                          last_seen=utcnow()))


def revoke_node(store: Store, *, node_id: int) -> NodeRow:
    """Unpin a node's key and refuse that key from now on; the node may join again only
    with a new key (and the join token)."""
    with store.session.begin() as s:
        node = s.get(NodeRow, node_id, with_for_update=True)
        if node is None:
            raise NotFoundError(f"no node with id {node_id}; list nodes with GET /api/v1/nodes")
        if node.public_key:
            node.revoked_key, node.public_key = node.public_key, None
        node.left = True
        return node


def revoked_keys(store: Store) -> set[bytes]:
    with store.session() as s:
        return {k.encode() for k in s.scalars(select(NodeRow.revoked_key))
                .all() if k}


def set_draining(store: Store, *, node_id: int, draining: bool) -> NodeRow:
    """Stop (or resume) handing new leases to a node; the leases it holds run out."""
    with store.session.begin() as s:
        node = s.get(NodeRow, node_id, with_for_update=True)
        if node is None:
            raise NotFoundError(f"no node with id {node_id}; list nodes with GET /api/v1/nodes")
        node.draining = draining
        return node


def draining_nodes(store: Store) -> set[int]:
    with store.session() as s:
        return set(s.scalars(select(NodeRow.id).where(NodeRow.draining)))


def mark_left(store: Store, *, node_id: int) -> None:
    with store.session.begin() as s:
        s.execute(update(NodeRow).where(NodeRow.id == node_id).values(left=True))


def list_nodes(store: Store) -> list[NodeRow]:
    with store.session() as s:
        return list(s.scalars(select(NodeRow).order_by(NodeRow.id)))


# --- models -------------------------------------------------------------------------


def add_model(store: Store, *, name: str, sha256: str, size: int, path: str,
              threads: int, n_ctx: int, chat_template: dict[str, str] | None = None,
              cpus: float | None = None, memory_mb: int | None = None) -> ModelRow:
    def write() -> ModelRow:
        with store.session.begin() as s:
            existing = s.get(ModelRow, name)
            if existing is not None:
                if existing.sha256 != sha256:
                    raise ModelError(f"a model named '{name}' is already registered with "
                                     "another file; choose a new name")
                return existing
            clash = s.scalar(select(ModelRow).where(ModelRow.sha256 == sha256))
            if clash is not None:
                raise ModelError(f"this file is already registered as '{clash.name}'")
            row = ModelRow(name=name, sha256=sha256, size=size, path=path, threads=threads,
                           n_ctx=n_ctx, chat_template=chat_template, cpus=cpus,
                           memory_mb=memory_mb)
            s.add(row)
            return row

    return _once_more_if_raced(write)


def update_model(store: Store, *, name: str, changes: dict[str, Any]) -> ModelRow:
    """Change a model's worker settings (threads, n_ctx, cpus, memory_mb); agents then
    replace its workers. A None value for cpus or memory_mb lifts that limit."""
    allowed = {"threads", "n_ctx", "cpus", "memory_mb"}
    if unknown := set(changes) - allowed:
        raise ModelError(f"cannot change {', '.join(sorted(unknown))}; a model's worker "
                         f"settings are {', '.join(sorted(allowed))}")
    with store.session.begin() as s:
        row = s.get(ModelRow, name, with_for_update=True)
        if row is None:
            raise NotFoundError(f"no model named '{name}'; list models with GET /api/v1/models")
        for key, value in changes.items():
            setattr(row, key, value)
        return row


def remove_model(store: Store, *, name: str) -> None:
    """Unregister a model; agents then stop its workers. Refused while a running job
    still has work for it (cancel the job first); finished results stay."""
    with store.session.begin() as s:
        row = s.get(ModelRow, name, with_for_update=True)
        if row is None:
            raise NotFoundError(f"no model named '{name}'; list models with GET /api/v1/models")
        busy = s.scalars(
            select(JobRow.id).join(WorkItemRow, WorkItemRow.job_id == JobRow.id)
            .where(JobRow.state == "running", WorkItemRow.model == name,
                   WorkItemRow.status.in_(("pending", "leased"))).distinct()).all()
        if busy:
            raise ConflictError(f"model '{name}' still has work in running job(s) "
                                f"{', '.join(map(str, busy))}; cancel them first "
                                "(POST /api/v1/jobs/{id}/cancel)")
        s.delete(row)


def list_models(store: Store) -> list[ModelRow]:
    with store.session() as s:
        return list(s.scalars(select(ModelRow).order_by(ModelRow.name)))


def model_by_sha(store: Store, *, sha256: str) -> ModelRow | None:
    with store.session() as s:
        return s.scalar(select(ModelRow).where(ModelRow.sha256 == sha256))


# --- datasets -----------------------------------------------------------------------


def add_dataset(store: Store, *, name: str, task: str, sha256: str, content: bytes,
                format: str, documents: bytes | None, labels: dict[str, str] | None,
                items: int) -> DatasetRow:
    """Store a validated user dataset; the same name with other content is refused."""
    def write() -> DatasetRow:
        with store.session.begin() as s:
            existing = s.get(DatasetRow, name)
            if existing is not None:
                if existing.sha256 != sha256:
                    raise DatasetError(f"name: a dataset named '{name}' is already registered "
                                       "with other content; choose a new name (results name "
                                       "their data by name and sha256)")
                return existing
            row = DatasetRow(name=name, task=task, sha256=sha256, content=content,
                             format=format, documents=documents, labels=labels,
                             items=items)
            s.add(row)
            return row

    return _once_more_if_raced(write)


def get_dataset(store: Store, *, name: str) -> DatasetRow | None:
    with store.session() as s:
        return s.get(DatasetRow, name)


def list_datasets(store: Store) -> list[DatasetRow]:
    with store.session() as s:
        return list(s.scalars(select(DatasetRow).order_by(DatasetRow.name)))


# --- jobs and work items ------------------------------------------------------------


@dataclass(frozen=True)
class NewWorkItem:
    model: str
    task: str
    dataset: str
    item_key: str
    repeat: int
    prompt: str
    reference: dict[str, Any]
    params: dict[str, Any]


def create_job(store: Store, *, name: str, spec: dict[str, Any],
               items: list[NewWorkItem]) -> JobRow:
    with store.session.begin() as s:
        job = JobRow(name=name, spec=spec, total=len(items))
        s.add(job)
        s.flush()
        s.add_all(WorkItemRow(job_id=job.id, model=i.model, task=i.task, dataset=i.dataset,
                              item_key=i.item_key, repeat=i.repeat, prompt=i.prompt,
                              reference=i.reference, params=i.params) for i in items)
        return job


def get_job(store: Store, *, job_id: int) -> JobRow:
    with store.session() as s:
        job = s.get(JobRow, job_id)
        if job is None:
            raise NotFoundError(f"no job with id {job_id}; list jobs with GET /api/v1/jobs")
        return job


def list_jobs(store: Store) -> list[JobRow]:
    with store.session() as s:
        return list(s.scalars(select(JobRow).order_by(JobRow.id.desc())))


def job_progress(store: Store, *, job_id: int) -> dict[str, int]:
    with store.session() as s:
        rows = s.execute(select(WorkItemRow.status, func.count())
                         .where(WorkItemRow.job_id == job_id)
                         .group_by(WorkItemRow.status)).all()
    return {status: count for status, count in rows}


def job_items(store: Store, *, job_id: int) -> list[WorkItemRow]:
    with store.session() as s:
        return list(s.scalars(select(WorkItemRow).where(WorkItemRow.job_id == job_id)
                              .order_by(WorkItemRow.id)))


def lease_next(store: Store, *, model: str, node_id: int, lease_s: float) -> WorkItemRow | None:
    """Lease the oldest pending item of a running job for `model`, or None.

    Concurrent callers never lease one item twice: on PostgreSQL each locks the item it
    takes and skips items that others hold (`FOR UPDATE SKIP LOCKED`); SQLite runs them
    one at a time.
    """
    with store.session.begin() as s:
        item = s.scalar(
            select(WorkItemRow).join(JobRow, JobRow.id == WorkItemRow.job_id)
            .where(WorkItemRow.model == model, WorkItemRow.status == "pending",
                   JobRow.state == "running")
            .order_by(WorkItemRow.job_id, WorkItemRow.id).limit(1)
            .with_for_update(skip_locked=True, of=WorkItemRow))
        if item is None:
            return None
        item.status = "leased"
        item.lease_id = uuid.uuid4().hex
        item.lease_node = node_id
        item.lease_deadline = utcnow() + timedelta(seconds=lease_s)
        item.attempts += 1
        return item


Scorer = Callable[[WorkItemRow, str], tuple[str | None, dict[str, Any]]]


def complete_item(store: Store, *, item_id: int, lease_id: str, node_id: int, output: str,
                  measurement: dict[str, Any] | None, error: str | None,
                  scorer: Scorer) -> bool:
    """Record a result for the item's live lease; False (and counted) if stale or duplicate."""
    with store.session.begin() as s:
        item = s.get(WorkItemRow, item_id, with_for_update=True)
        if item is None or item.status != "leased" or item.lease_id != lease_id:
            store.discarded_results += 1
            return False
        item.lease_id, item.lease_deadline = None, None
        if error is not None:
            item.status = "pending" if item.attempts < 3 else "failed"
            item.error = error
            _finish_job_if_done(s, job_id=item.job_id)
            return True
        item.prediction, item.score = scorer(item, output)
        item.status, item.output, item.node_id = "done", output, node_id
        item.error = None
        item.finished_at = utcnow()
        for key, value in (measurement or {}).items():
            setattr(item, key, value)
        _finish_job_if_done(s, job_id=item.job_id)
        return True


def fail_item(store: Store, *, item_id: int, lease_id: str, reason: str) -> bool:
    """Mark the item of a live lease failed for good (its result cannot be scored)."""
    with store.session.begin() as s:
        item = s.get(WorkItemRow, item_id, with_for_update=True)
        if item is None or item.status != "leased" or item.lease_id != lease_id:
            store.discarded_results += 1
            return False
        item.lease_id, item.lease_deadline, item.lease_node = None, None, None
        item.status, item.error = "failed", reason
        _finish_job_if_done(s, job_id=item.job_id)
        return True


def get_item(store: Store, *, item_id: int) -> WorkItemRow | None:
    with store.session() as s:
        return s.get(WorkItemRow, item_id)


def cancel_job(store: Store, *, job_id: int) -> JobRow:
    """Stop a running job: its open items are cancelled; late results for them are discarded.

    Finished items and their results stay. Cancelling a job that is not running changes
    nothing.
    """
    with store.session.begin() as s:
        job = s.get(JobRow, job_id)
        if job is None:
            raise NotFoundError(f"no job with id {job_id}; list jobs with GET /api/v1/jobs")
        if job.state == "running":
            s.execute(update(WorkItemRow)
                      .where(WorkItemRow.job_id == job_id,
                             WorkItemRow.status.in_(("pending", "leased")))
                      .values(status="cancelled", lease_id=None, lease_deadline=None,
                              lease_node=None))
            # only if still running: the last result may have finished it meanwhile
            s.execute(update(JobRow).where(JobRow.id == job_id, JobRow.state == "running")
                      .values(state="cancelled", finished_at=utcnow())
                      .execution_options(synchronize_session=False))
            s.refresh(job)
        return job


def counts(store: Store) -> dict[str, dict[str, int]]:
    """Jobs by state and work items by status, for monitoring."""
    with store.session() as s:
        jobs = dict(s.execute(select(JobRow.state, func.count()).group_by(JobRow.state)).all())
        items = dict(s.execute(select(WorkItemRow.status, func.count())
                               .group_by(WorkItemRow.status)).all())
    return {"jobs": {str(k): int(v) for k, v in jobs.items()},
            "items": {str(k): int(v) for k, v in items.items()}}


def _finish_job_if_done(s: Session, *, job_id: int) -> None:
    """Finish the job if no item is open. The job's row is locked before the count, so of
    two results that close its last two items (PostgreSQL), the later one sees the other."""
    job = s.get(JobRow, job_id, with_for_update=True)
    open_items = s.scalar(select(func.count()).where(
        WorkItemRow.job_id == job_id, WorkItemRow.status.in_(("pending", "leased"))))
    if open_items == 0 and job is not None and job.state == "running":
        job.state, job.finished_at = "finished", utcnow()


def requeue_expired(store: Store, *, now: datetime | None = None) -> int:
    """Return expired leases to the queue; the number requeued."""
    with store.session.begin() as s:
        result = s.execute(update(WorkItemRow)
                           .where(WorkItemRow.status == "leased",
                                  WorkItemRow.lease_deadline < (now or utcnow()))
                           .values(status="pending", lease_id=None, lease_deadline=None,
                                   lease_node=None))
        return int(result.rowcount)  # type: ignore[attr-defined]


def requeue_node_leases(store: Store, *, node_id: int, keep: Collection[str] = ()) -> int:
    """Return every item leased to `node_id` to the queue, except leases in `keep` (which
    the node says it holds); the number requeued."""
    with store.session.begin() as s:
        result = s.execute(update(WorkItemRow)
                           .where(WorkItemRow.status == "leased",
                                  WorkItemRow.lease_node == node_id,
                                  WorkItemRow.lease_id.not_in(list(keep)))
                           .values(status="pending", lease_id=None, lease_deadline=None,
                                   lease_node=None))
        return int(result.rowcount)  # type: ignore[attr-defined]


def models_wanted(store: Store) -> list[ModelRow]:
    """Every registered model is deployed to every node (placement comes with the scheduler)."""
    return list_models(store)
