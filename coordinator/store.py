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
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from coordinator.db import (
    READ_ONLY,
    DatasetRow,
    JobRow,
    ModelRow,
    NodeRow,
    WorkItemRow,
    make_engine,
    utcnow,
)
from coordinator.errors import ConflictError, DatasetError, ModelError, NotFoundError
from coordinator.scheduler import JobView, LeaseView


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
        # for reads only: on SQLite it takes no lock, so it never holds up a writer
        self.read: sessionmaker[Session] = sessionmaker(
            self.engine.execution_options(**{READ_ONLY: True}), expire_on_commit=False)
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
    with store.read() as s:
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
    with store.read() as s:
        return set(s.scalars(select(NodeRow.id).where(NodeRow.draining)))


def mark_left(store: Store, *, node_id: int) -> None:
    with store.session.begin() as s:
        s.execute(update(NodeRow).where(NodeRow.id == node_id).values(left=True))


def list_nodes(store: Store) -> list[NodeRow]:
    with store.read() as s:
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
    with store.read() as s:
        return list(s.scalars(select(ModelRow).order_by(ModelRow.name)))


def model_by_sha(store: Store, *, sha256: str) -> ModelRow | None:
    with store.read() as s:
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
    with store.read() as s:
        return s.get(DatasetRow, name)


def list_datasets(store: Store) -> list[DatasetRow]:
    with store.read() as s:
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
                              reference=i.reference, params=i.params,
                              lease_rank=-size_hint(i.prompt, i.params)) for i in items)
        return job


DECODE_COST = 4  # a generated token costs about this many prompt tokens on a CPU


def size_hint(prompt: str, params: dict[str, Any]) -> int:
    """An item's expected cost in prompt-token units: about 4 characters per prompt token,
    plus its output budget at DECODE_COST each. Only the order of items matters."""
    budget = params.get("max_tokens")
    return len(prompt) // 4 + DECODE_COST * (budget if isinstance(budget, int) else 0)


def get_job(store: Store, *, job_id: int) -> JobRow:
    with store.read() as s:
        job = s.get(JobRow, job_id)
        if job is None:
            raise NotFoundError(f"no job with id {job_id}; list jobs with GET /api/v1/jobs")
        return job


def list_jobs(store: Store) -> list[JobRow]:
    with store.read() as s:
        return list(s.scalars(select(JobRow).order_by(JobRow.id.desc())))


def job_progress(store: Store, *, job_id: int) -> dict[str, int]:
    with store.read() as s:
        rows = s.execute(select(WorkItemRow.status, func.count())
                         .where(WorkItemRow.job_id == job_id)
                         .group_by(WorkItemRow.status)).all()
    return {status: count for status, count in rows}


def job_items(store: Store, *, job_id: int) -> list[WorkItemRow]:
    with store.read() as s:
        return list(s.scalars(select(WorkItemRow).where(WorkItemRow.job_id == job_id)
                              .order_by(WorkItemRow.id)))


def lease_next(store: Store, *, model: str, node_id: int, lease_s: float,
               job_ids: Sequence[int] = ()) -> WorkItemRow | None:
    """Lease a pending item for `model`, or None: of the first job in `job_ids` (the
    scheduler's order) that has one, else of the oldest running job (the scheduler's view
    may be a moment old); within a job the largest first (`lease_rank`), then the oldest.

    Concurrent callers never lease one item twice: on PostgreSQL each locks the item it
    takes and skips items that others hold (`FOR UPDATE SKIP LOCKED`); SQLite runs them
    one at a time.
    """
    def first_of(s: Session, job_id: int) -> WorkItemRow | None:  # read off the index
        return s.scalar(
            select(WorkItemRow).join(JobRow, JobRow.id == WorkItemRow.job_id)
            .where(WorkItemRow.job_id == job_id, WorkItemRow.model == model,
                   WorkItemRow.status == "pending", JobRow.state == "running")
            .order_by(WorkItemRow.lease_rank, WorkItemRow.id)
            .limit(1).with_for_update(skip_locked=True, of=WorkItemRow))

    with store.session.begin() as s:
        running = s.scalars(select(JobRow.id).where(JobRow.state == "running")
                            .order_by(JobRow.id)).all()
        order = [*job_ids, *(j for j in running if j not in job_ids)]
        item = next((found for job_id in order
                     if (found := first_of(s, job_id)) is not None), None)
        if item is None:
            return None
        item.status = "leased"
        item.lease_id = uuid.uuid4().hex
        item.lease_node = node_id
        item.lease_deadline = utcnow() + timedelta(seconds=lease_s)
        item.attempts += 1
        return item


def lease_backup(store: Store, *, item_id: int, node_id: int, lease_s: float
                 ) -> WorkItemRow | None:
    """Start a second copy of a leased item on `node_id` (a backup task); None if the item
    is no longer leased, already has a copy, or is leased to that node itself. The copy's
    lease is `backup_lease_id`."""
    with store.session.begin() as s:
        item = s.get(WorkItemRow, item_id, with_for_update=True)
        if (item is None or item.status != "leased" or item.backup_lease_id is not None
                or item.lease_node == node_id):
            return None
        item.backup_lease_id = uuid.uuid4().hex
        item.backup_node = node_id
        item.backup_deadline = utcnow() + timedelta(seconds=lease_s)
        return item


@dataclass(frozen=True)
class Recorded:
    """What became of a result: `accepted` (else discarded and counted), and the other
    copy's lease to cancel when a backup race was decided (node id, lease id)."""

    accepted: bool
    cancel: tuple[int, str] | None = None

    def __bool__(self) -> bool:
        return self.accepted


def _holds(item: WorkItemRow | None, lease_id: str) -> bool:
    return item is not None and item.status == "leased" and lease_id in (
        item.lease_id, item.backup_lease_id)


def _drop_lease(item: WorkItemRow, lease_id: str) -> bool:
    """Drop one of an item's two leases, the other running on; False if it had one only."""
    if item.backup_lease_id is None:
        return False
    if lease_id == item.lease_id:
        item.lease_id, item.lease_node = item.backup_lease_id, item.backup_node
        item.lease_deadline = item.backup_deadline
    item.backup_lease_id, item.backup_node, item.backup_deadline = None, None, None
    return True


def _release(item: WorkItemRow, status: str) -> None:
    item.status = status
    item.lease_id, item.lease_deadline, item.lease_node = None, None, None
    item.backup_lease_id, item.backup_node, item.backup_deadline = None, None, None


Scorer = Callable[[WorkItemRow, str], tuple[str | None, dict[str, Any]]]


@dataclass(frozen=True)
class ResultIn:
    """A result for the store: a node's output for one lease of an item, scored or not."""

    item_id: int
    lease_id: str
    node_id: int
    output: str
    measurement: dict[str, Any] | None = None
    error: str | None = None  # the worker's: the item is tried again (3 attempts)
    scored: tuple[str | None, dict[str, Any]] | None = None  # prediction and score
    unscorable: str | None = None  # scoring failed: the item fails for good, saying why


def _apply(item: WorkItemRow | None, result: ResultIn) -> Recorded:
    """Record `result` on its (locked) item if it holds one of the item's live leases."""
    if item is None or not _holds(item, result.lease_id):
        return Recorded(False)
    other = (item.backup_node, item.backup_lease_id) if result.lease_id == item.lease_id \
        else (item.lease_node, item.lease_id)
    cancel = (other[0], other[1]) if other[0] is not None and other[1] else None
    if result.unscorable is not None:
        _release(item, "failed")
        item.error = result.unscorable
        return Recorded(True, cancel)
    if result.error is not None:
        item.error = result.error
        if not _drop_lease(item, result.lease_id):  # no other copy runs: try again
            _release(item, "pending" if item.attempts < 3 else "failed")
        return Recorded(True)
    item.prediction, item.score = result.scored or (None, {})
    _release(item, "done")
    item.output, item.node_id = result.output, result.node_id
    item.error = None
    item.finished_at = utcnow()
    for key, value in (result.measurement or {}).items():
        setattr(item, key, value)
    return Recorded(True, cancel)


def record_results(store: Store, results: Sequence[ResultIn]) -> list[Recorded]:
    """Record a batch of results in one transaction, each as `complete_item` would: the
    items are locked in id order, then each job that one of them may have closed."""
    with store.session.begin() as s:
        ids = sorted({r.item_id for r in results})
        found = {item.id: item for item in s.scalars(
            select(WorkItemRow).where(WorkItemRow.id.in_(ids)).order_by(WorkItemRow.id)
            .with_for_update())}
        outcomes, jobs = [], set()
        for result in results:
            outcome = _apply(item := found.get(result.item_id), result)
            if outcome.accepted and item is not None:
                jobs.add(item.job_id)
            else:
                store.discarded_results += 1
            outcomes.append(outcome)
        for job_id in sorted(jobs):
            _finish_job_if_done(s, job_id=job_id)
        return outcomes


def items_by_id(store: Store, *, ids: Collection[int]) -> dict[int, WorkItemRow]:
    with store.read() as s:
        return {item.id: item for item in s.scalars(
            select(WorkItemRow).where(WorkItemRow.id.in_(sorted(ids))))}


def complete_item(store: Store, *, item_id: int, lease_id: str, node_id: int, output: str,
                  measurement: dict[str, Any] | None, error: str | None,
                  scorer: Scorer) -> Recorded:
    """Record a result for one of the item's live leases; discarded (and counted) if stale
    or a duplicate. The first result of two copies wins: the other lease is returned to be
    cancelled. A failed copy while the other runs on just ends that copy."""
    with store.session.begin() as s:
        item = s.get(WorkItemRow, item_id, with_for_update=True)
        scored = scorer(item, output) if item is not None and _holds(item, lease_id) \
            and error is None else None
        outcome = _apply(item, ResultIn(item_id=item_id, lease_id=lease_id, node_id=node_id,
                                        output=output, measurement=measurement,
                                        error=error, scored=scored))
        if not outcome.accepted or item is None:
            store.discarded_results += 1
        else:
            _finish_job_if_done(s, job_id=item.job_id)
        return outcome


def fail_item(store: Store, *, item_id: int, lease_id: str, reason: str) -> Recorded:
    """Mark the item of a live lease failed for good (its result cannot be scored)."""
    (outcome,) = record_results(store, [ResultIn(item_id=item_id, lease_id=lease_id,
                                                 node_id=0, output="", unscorable=reason)])
    return outcome


def get_item(store: Store, *, item_id: int) -> WorkItemRow | None:
    with store.read() as s:
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
                              lease_node=None, backup_lease_id=None, backup_node=None,
                              backup_deadline=None))
            # only if still running: the last result may have finished it meanwhile
            s.execute(update(JobRow).where(JobRow.id == job_id, JobRow.state == "running")
                      .values(state="cancelled", finished_at=utcnow())
                      .execution_options(synchronize_session=False))
            s.refresh(job)
        return job


def counts(store: Store) -> dict[str, dict[str, int]]:
    """Jobs by state and work items by status, for monitoring."""
    with store.read() as s:
        jobs = dict(s.execute(select(JobRow.state, func.count()).group_by(JobRow.state)).all())
        items = dict(s.execute(select(WorkItemRow.status, func.count())
                               .group_by(WorkItemRow.status)).all())
    return {"jobs": {str(k): int(v) for k, v in jobs.items()},
            "items": {str(k): int(v) for k, v in items.items()}}


def _finish_job_if_done(s: Session, *, job_id: int) -> None:
    """Finish the job if no item is open. The job's row is locked before the look, so of
    two results that close its last two items (PostgreSQL), the later one sees the other."""
    job = s.get(JobRow, job_id, with_for_update=True)
    still_open = s.scalar(select(WorkItemRow.id).where(
        WorkItemRow.job_id == job_id, WorkItemRow.status.in_(("pending", "leased")))
        .limit(1))
    if still_open is None and job is not None and job.state == "running":
        job.state, job.finished_at = "finished", utcnow()


def requeue_expired(store: Store, *, now: datetime | None = None) -> int:
    """End expired leases: an item whose every copy expired goes back to the queue (the
    number requeued); an expired copy of an item whose other copy runs just ends."""
    now = now or utcnow()
    with store.session.begin() as s:
        items = s.scalars(select(WorkItemRow).where(
            WorkItemRow.status == "leased",
            (WorkItemRow.lease_deadline < now) | (WorkItemRow.backup_deadline < now))
            .with_for_update()).all()
        requeued = 0
        for item in items:
            for lease_id, deadline in ((item.lease_id, item.lease_deadline),
                                       (item.backup_lease_id, item.backup_deadline)):
                if lease_id and deadline is not None and deadline < now \
                        and not _drop_lease(item, lease_id):
                    _release(item, "pending")
                    requeued += 1
        return requeued


def requeue_node_leases(store: Store, *, node_id: int, keep: Collection[str] = ()) -> int:
    """End every lease of `node_id` but those in `keep` (which the node says it holds): an
    item goes back to the queue unless its other copy runs elsewhere; the number requeued."""
    with store.session.begin() as s:
        items = s.scalars(select(WorkItemRow).where(
            WorkItemRow.status == "leased",
            (WorkItemRow.lease_node == node_id) | (WorkItemRow.backup_node == node_id))
            .with_for_update()).all()
        requeued = 0
        for item in items:
            for lease_id, holder in ((item.lease_id, item.lease_node),
                                     (item.backup_lease_id, item.backup_node)):
                if holder == node_id and lease_id and lease_id not in keep \
                        and not _drop_lease(item, lease_id):
                    _release(item, "pending")
                    requeued += 1
        return requeued


def requeue_orphans(store: Store, *, live: Collection[int]) -> int:
    """End every lease held by a node outside `live` (e.g. leases from before a coordinator
    restart whose node never came back); the number of items requeued."""
    with store.read() as s:
        holders = set(s.scalars(select(WorkItemRow.lease_node).where(
            WorkItemRow.status == "leased").distinct())) | set(s.scalars(
                select(WorkItemRow.backup_node).where(WorkItemRow.status == "leased",
                                                      WorkItemRow.backup_node.is_not(None))
                .distinct()))
    return sum(requeue_node_leases(store, node_id=node) for node in holders
               if node is not None and node not in live)


# --- the scheduler's view -----------------------------------------------------------


def queue_view(store: Store) -> list[JobView]:
    """Every running job with its pending items per model and its items in flight."""
    with store.read() as s:
        jobs = s.execute(select(JobRow.id, JobRow.spec).where(JobRow.state == "running")
                         ).all()
        counted = s.execute(
            select(WorkItemRow.job_id, WorkItemRow.model, WorkItemRow.status, func.count())
            .join(JobRow, JobRow.id == WorkItemRow.job_id)
            .where(JobRow.state == "running",
                   WorkItemRow.status.in_(("pending", "leased")))
            .group_by(WorkItemRow.job_id, WorkItemRow.model, WorkItemRow.status)).all()
    pending: dict[int, dict[str, int]] = {}
    leased: dict[int, int] = {}
    for job_id, model, status, count in counted:
        if status == "pending":
            pending.setdefault(job_id, {})[model] = int(count)
        else:
            leased[job_id] = leased.get(job_id, 0) + int(count)
    return [JobView(id=job_id, priority=int((spec or {}).get("priority", 0)),
                    pending=pending.get(job_id, {}), leased=leased.get(job_id, 0))
            for job_id, spec in jobs]


def open_leases(store: Store, *, model: str, lease_s: float) -> list[LeaseView]:
    """The leases that run for `model`, their start on the UNIX clock."""
    with store.read() as s:
        rows = s.execute(select(WorkItemRow.id, WorkItemRow.job_id, WorkItemRow.lease_node,
                                WorkItemRow.lease_deadline, WorkItemRow.backup_lease_id)
                         .where(WorkItemRow.status == "leased",
                                WorkItemRow.model == model)).all()
    return [LeaseView(item_id=item_id, job_id=job_id, model=model, node_id=node or 0,
                      started=deadline.replace(tzinfo=UTC).timestamp() - lease_s
                      if deadline else 0.0, backed_up=backup is not None)
            for item_id, job_id, node, deadline, backup in rows]


def models_wanted(store: Store) -> list[ModelRow]:
    """Every registered model is deployed to every node (placement comes with the scheduler)."""
    return list_models(store)
