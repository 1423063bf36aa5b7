"""The scheduler's decisions: a pure function of (queue, nodes, leases, now).

Scheduling is pull-based. An agent asks for work when one of its workers has a free
slot, and `decide` answers that ask:

- **Placement.** A node gets work only for a model it hosts, and none while its free
  memory is below `Policy.min_free_mb`. Which models a node hosts comes from `place`:
  a model goes to every node whose memory holds it, next to the models placed before it.
- **Priority.** Jobs with a higher `priority` go first. Lower ones wait while a higher
  job still has pending items that this node can run.
- **Fair share.** Among jobs of the same priority, the job with the fewest items in
  flight goes first (then the oldest). Every free slot goes to the job that holds the
  fewest, so concurrent jobs share the fleet evenly (max-min fair).
- **Backup tasks** (MapReduce's, estimated as in LATE). A model may have no pending
  items left in any job while leases still run. Then a node that asks may start a second
  copy of the lease expected to finish last. It does so only if it would itself finish
  that item clearly sooner (`Policy.backup_gain`, 1.5×): an item gets one copy. A lease
  on a node that has been silent for `Policy.silent_s` is expected never to finish. The
  first result wins, and the coordinator cancels the other. `Policy.backups` off
  (`slmfleet coordinator --no-backups`) leaves stragglers to liveness and lease expiry.

`decide` answers `Take`, which lists the jobs to lease from in order; the store leases
from the first that still has a pending item, the largest expected first (its `size_hint`:
longest processing time first keeps big items from coming last, when they would set
the job's end), then the oldest. It may also answer `Backup`,
which names the item to copy, or `Wait`. Times are seconds on any one clock.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class JobView:
    id: int
    priority: int = 0  # higher first
    pending: Mapping[str, int] = field(default_factory=dict)  # model -> items not leased
    leased: int = 0  # items in flight, all models


@dataclass(frozen=True)
class LeaseView:
    item_id: int
    job_id: int
    model: str
    node_id: int
    started: float
    backed_up: bool = False  # a second copy already runs


@dataclass(frozen=True)
class NodeView:
    id: int
    models: frozenset[str]  # models it hosts (a worker runs or is coming)
    silent_s: float = 0.0  # since the coordinator last heard from it
    free_mb: float | None = None  # last reported available memory
    item_s: Mapping[str, float] = field(default_factory=dict)  # model -> seconds per item


@dataclass(frozen=True)
class Ask:
    node_id: int
    model: str


@dataclass(frozen=True)
class Policy:
    silent_s: float = 2.0  # a lease on a node silent this long is a straggler
    min_free_mb: float = 64.0  # below this a node takes no new work
    idle_retry_s: float = 0.5
    busy_retry_s: float = 5.0  # for a node that cannot take work for a while
    # a copy starts only if its node would finish this many times sooner than the holder
    # (an item gets one copy: spend it on a clearly faster node)
    backup_gain: float = 1.5
    backups: bool = True  # off: no copies; a straggler's item waits for its lease


@dataclass(frozen=True)
class Take:
    job_ids: tuple[int, ...]


@dataclass(frozen=True)
class Backup:
    item_id: int
    job_id: int


@dataclass(frozen=True)
class Wait:
    retry_after_s: float
    reason: str


Decision = Take | Backup | Wait


def decide(ask: Ask, *, jobs: Sequence[JobView], nodes: Mapping[int, NodeView],
           leases: Sequence[LeaseView], now: float, policy: Policy = Policy()) -> Decision:
    """What node `ask.node_id` should run next on its `ask.model` worker."""
    node = nodes.get(ask.node_id)
    if node is None or ask.model not in node.models:
        return Wait(policy.busy_retry_s, f"node does not host {ask.model}")
    if node.free_mb is not None and node.free_mb < policy.min_free_mb:
        return Wait(policy.busy_retry_s, f"only {node.free_mb:.0f} MB free")
    open_jobs = [j for j in jobs if j.pending.get(ask.model, 0) > 0]
    if open_jobs:
        ranked = sorted(open_jobs, key=lambda j: (-j.priority, j.leased, j.id))
        return Take(tuple(j.id for j in ranked))
    straggler = _straggler(ask, node, nodes=nodes, leases=leases, now=now, policy=policy) \
        if policy.backups else None
    if straggler is not None:
        return Backup(item_id=straggler.item_id, job_id=straggler.job_id)
    return Wait(policy.idle_retry_s, "no work")


def _straggler(ask: Ask, node: NodeView, *, nodes: Mapping[int, NodeView],
               leases: Sequence[LeaseView], now: float, policy: Policy) -> LeaseView | None:
    """The lease of `ask.model` expected to finish last, if `node` would finish it sooner."""
    own = expected_item_s(node, ask.model, nodes.values())
    best: tuple[float, LeaseView] | None = None
    for lease in leases:
        if lease.model != ask.model or lease.backed_up or lease.node_id == node.id:
            continue
        left = remaining_s(lease, nodes=nodes, now=now, policy=policy)
        if left > own * policy.backup_gain and (best is None or left > best[0]):
            best = (left, lease)
    return best[1] if best else None


def remaining_s(lease: LeaseView, *, nodes: Mapping[int, NodeView], now: float,
                policy: Policy) -> float:
    """Expected seconds until `lease` reports: infinite on a silent or unknown node, 0
    while no node has finished an item of its model (no estimate, no backup).

    Item sizes have a long tail: an item that has run longer than its node's average is
    likely a big one, so it is expected to need about half as long again as it has run
    (never "done any moment now", or the latest item would never be backed up)."""
    holder = nodes.get(lease.node_id)
    if holder is None or holder.silent_s >= policy.silent_s:
        return math.inf
    expected = expected_item_s(holder, lease.model, nodes.values())
    if expected == 0.0:  # nobody has finished an item yet: no basis to call it late
        return 0.0
    elapsed = max(0.0, now - lease.started)
    return max(expected - elapsed, elapsed / 2)


def expected_item_s(node: NodeView, model: str, fleet: Iterable[NodeView]) -> float:
    """A node's seconds per item of `model`; the fleet's median while it has none yet,
    and 0 (no estimate) when nobody has finished an item."""
    if model in node.item_s:
        return node.item_s[model]
    known = sorted(n.item_s[model] for n in fleet if model in n.item_s)
    return known[len(known) // 2] if known else 0.0


# --- placement ----------------------------------------------------------------------


@dataclass(frozen=True)
class ModelNeed:
    name: str
    memory_mb: float  # what a worker of it takes


@dataclass(frozen=True)
class NodeRoom:
    id: int
    ram_mb: float | None  # None: unknown, then it hosts every model


RESERVED_MB = 256.0  # for the OS and the agent


def model_memory_mb(*, size: int, n_ctx: int, memory_mb: int | None) -> float:
    """A worker's memory: its container limit when set; else the weights, plus a context
    allowance (about 64 KiB per token of context for the small models of a Pi fleet)."""
    if memory_mb is not None:
        return float(memory_mb)
    return size / 2**20 * 1.1 + n_ctx * 64 / 1024


def place(models: Sequence[ModelNeed], nodes: Iterable[NodeRoom]) -> dict[int, tuple[str, ...]]:
    """Which models each node hosts: each model in turn (most wanted first) goes to every
    node whose remaining memory holds it."""
    placed: dict[int, tuple[str, ...]] = {}
    for node in nodes:
        room = math.inf if node.ram_mb is None else node.ram_mb - RESERVED_MB
        chosen: list[str] = []
        for model in models:
            if model.memory_mb <= room:
                chosen.append(model.name)
                room -= model.memory_mb
        placed[node.id] = tuple(chosen)
    return placed
