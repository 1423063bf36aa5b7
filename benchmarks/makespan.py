"""Makespan of one job under the scheduler, against the ideal Σ work / Σ speed.

A discrete-event simulation, deterministic for a seed, of N nodes with one worker slot
each pulling the M items of one job through the real `coordinator.scheduler.decide`, so
the coordinator's logic is measured and not a model. Item i has intrinsic work w_i
(lognormal, mean 1, sigma 0.5) and a size hint h_i = w_i × e^(σ z_i), z_i standard normal
from a stream of its own: the store's `size_hint`, known before the item runs, is off by
a lognormal factor of sigma σ = `--hint-sigma` (default 0.5, a pessimistic guess: how
good the real hint is has not been measured). Node j has speed s_j (a Pi 4 = 1.0 or a
Pi 5 = 2.0, with probability 1/2 each, times a uniform spread of ±10 %); one execution of
item i on node j takes w_i × noise / s_j seconds, noise lognormal with mean 1 and sigma
0.1, drawn per copy. Every request and its reply cross a network of `--delay-ms` round
trip (5 ms, half each way), so each item costs one round trip beside its service time.
The coordinator keeps each node's seconds per item as the hub does (`hub._timed`: an
exponentially weighted average, weight `hub.ITEM_TIME_WEIGHT` for the newest time from
lease to result), starting with no estimate.

Scenario A is that fleet; in scenario B the fastest node halves its speed at 30 % of A's
ideal makespan (an item in progress then runs on at the lower speed). The ideal is the
time T at which the fleet's cumulative capacity ∫ Σ_j s_j(t) dt reaches Σ w_i, i.e.
Σ w / Σ s in A. Policies: "pull" is `decide` as it is (with backup copies), leasing as
`store.lease_next` does: the pending item with the largest hint first, then the oldest
(the lowest index); "no backup" is the same with every `Backup` answered as a `Wait`;
"static" deals the items round-robin by index to the nodes up front, each node runs its
share in turn, nobody steals (no network cost). Targets for "pull": makespan / ideal
≤ 1.10 in A and ≤ 1.15 in B, for the worst of the seeds. Every node sends its first ask
at t = 0; the makespan ends when the coordinator records the last result.

`--what-if` prints, instead, what each piece buys on the same cases: "FIFO" is "pull"
leasing the oldest pending item first (the store before size hints); "pull" has hints
off by sigma σ; "exact" has hints of sigma 0; "clairv." is a reference that knows every
item's time (largest first, each on the node where it ends earliest, no network cost).

Run: `.venv/bin/python -m benchmarks.makespan [--seeds 5] [--nodes 4 16 64 256]
[--per-node 20 5] [--delay-ms 5] [--item-s 1] [--hint-sigma 0.5] [--what-if]`.
"""

from __future__ import annotations

import argparse
import heapq
import math
import random
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

from coordinator.hub import ITEM_TIME_WEIGHT
from coordinator.scheduler import (
    Ask,
    Backup,
    Decision,
    JobView,
    LeaseView,
    NodeView,
    Policy,
    Take,
    Wait,
    decide,
)

MODEL = "m"
JOB_ID = 1
TARGETS = {"A": 1.10, "B": 1.15}
SLOW_AT = 0.3  # of scenario A's ideal makespan
SLOW_FACTOR = 0.5
AS_DEPLOYED = Policy()

Decide = Callable[..., Decision]  # `scheduler.decide`'s signature


@dataclass(frozen=True)
class Case:
    """One simulated job on one fleet: everything random, drawn up front from a seed."""

    work: tuple[float, ...]  # item -> intrinsic work, in seconds on a speed-1.0 node
    noise: tuple[tuple[float, float], ...]  # item -> factor for its first, second copy
    speeds: tuple[float, ...]  # node -> items' work per second
    hint: tuple[float, ...]  # item -> its size hint (only the order matters)
    slow_node: int | None = None  # this node's speed drops to SLOW_FACTOR x ...
    slow_at: float = math.inf  # ... at this time


@dataclass(frozen=True)
class Outcome:
    makespan: float  # from the first ask until the coordinator records the last result
    drained: float = 0.0  # when the last pending item was leased
    backups_started: int = 0
    backups_won: int = 0  # the backup copy's result came first


def draw_case(*, nodes: int, items: int, seed: int, scenario: str = "A",
              item_s: float = 1.0, hint_sigma: float = 0.5) -> Case:
    """A fleet of `nodes` and a job of `items` for `seed`, with size hints off by a
    lognormal factor of sigma `hint_sigma`; B slows the fastest node. The hints' errors
    have their own stream: `hint_sigma` changes nothing else, and scales the same errors."""
    rng = random.Random(f"makespan/{seed}/{nodes}/{items}")
    speeds = tuple(rng.choice((1.0, 2.0)) * rng.uniform(0.9, 1.1) for _ in range(nodes))
    work = tuple(item_s * rng.lognormvariate(-0.5**2 / 2, 0.5) for _ in range(items))
    noise = tuple((rng.lognormvariate(-0.1**2 / 2, 0.1), rng.lognormvariate(-0.1**2 / 2, 0.1))
                  for _ in range(items))
    errors = random.Random(f"hint/{seed}/{nodes}/{items}")
    hint = tuple(w * math.exp(hint_sigma * errors.gauss(0.0, 1.0)) for w in work)
    case = Case(work=work, noise=noise, speeds=speeds, hint=hint)
    if scenario == "B":
        fastest = max(range(nodes), key=lambda j: speeds[j])
        case = replace(case, slow_node=fastest, slow_at=SLOW_AT * sum(work) / sum(speeds))
    return case


def finish_time(case: Case, node: int, start: float, work: float) -> float:
    """When `node`, starting `work` at `start`, ends it (its speed may drop meanwhile)."""
    speed = case.speeds[node]
    if node != case.slow_node or start + work / speed <= case.slow_at:
        return start + work / speed
    begin = max(start, case.slow_at)
    left = work - (begin - start) * speed
    return begin + left / (speed * SLOW_FACTOR)


def ideal(case: Case) -> float:
    """The time T at which ∫_0^T Σ_j speed_j(t) dt = Σ work."""
    total, capacity = sum(case.work), sum(case.speeds)
    if case.slow_node is None or total <= capacity * case.slow_at:
        return total / capacity
    after = capacity - case.speeds[case.slow_node] * (1 - SLOW_FACTOR)
    return case.slow_at + (total - capacity * case.slow_at) / after


def static_split(case: Case) -> Outcome:
    """Items dealt round-robin up front; each node runs its share back to back."""
    nodes = len(case.speeds)
    ends = []
    for node in range(nodes):
        t = 0.0
        for item in range(node, len(case.work), nodes):
            t = finish_time(case, node, t, case.work[item] * case.noise[item][0])
        ends.append(t)
    return Outcome(makespan=max(ends))


class PendingItems:
    """A job's pending items in the order `store.lease_next` leases them: the largest size
    hint first, then the oldest (the lowest index)."""

    def __init__(self, hints: Sequence[float]) -> None:
        self._heap = [(-hint, item) for item, hint in enumerate(hints)]
        heapq.heapify(self._heap)

    def __len__(self) -> int:
        return len(self._heap)

    def lease(self) -> int:
        """The item to lease next, taken out of the pending ones."""
        return heapq.heappop(self._heap)[1]


@dataclass
class _Copy:
    item: int
    node: int
    leased_at: float  # on the coordinator's clock, as `hub._leased_at`
    ends: float  # on the node
    backup: bool
    cancelled: bool = False


_ASK, _RESULT = 0, 1


def simulate(case: Case, *, backups: bool = True, policy: Policy = AS_DEPLOYED,
             delay_s: float = 0.005, decide_fn: Decide = decide) -> Outcome:
    """Pull the job through `decide_fn` until every item's result is recorded.

    Events happen at the coordinator: an ask arrives, or a result arrives (with the
    node's next ask, sent together). A lease reaches its node half a round trip after
    the decision, and a result or a cancel takes the other half."""
    half = delay_s / 2
    models = frozenset({MODEL})
    views = {j: NodeView(id=j, models=models) for j in range(len(case.speeds))}
    item_s: dict[int, float] = {}
    pending = PendingItems(case.hint)
    leases: dict[int, LeaseView] = {}  # item -> its (first) lease
    running: dict[int, list[_Copy]] = {}  # item -> its copies
    events: list[tuple[float, int, int, int, _Copy | None]] = []
    seq = 0
    done = started = won = 0
    drained = 0.0

    def push(at: float, kind: int, node: int, copy: _Copy | None = None) -> None:
        nonlocal seq
        seq += 1
        heapq.heappush(events, (at, seq, kind, node, copy))

    def run(item: int, node: int, now: float, *, backup: bool) -> None:
        work = case.work[item] * case.noise[item][1 if backup else 0]
        copy = _Copy(item, node, now, finish_time(case, node, now + half, work), backup)
        running.setdefault(item, []).append(copy)
        push(copy.ends + half, _RESULT, node, copy)

    def ask(node: int, now: float) -> None:
        nonlocal started, drained
        jobs = [JobView(id=JOB_ID, pending={MODEL: len(pending)}, leased=len(leases))]
        # the hub reads the leases only when nothing is pending; `decide` looks at them
        # only then, so passing them always changes nothing (and lets a spy see them)
        decision = decide_fn(Ask(node, MODEL), jobs=jobs, nodes=views,
                             leases=list(leases.values()), now=now, policy=policy)
        match decision:
            case Take():
                item = pending.lease()
                leases[item] = LeaseView(item_id=item, job_id=JOB_ID, model=MODEL,
                                         node_id=node, started=now)
                run(item, node, now, backup=False)
                drained = now
            case Backup(item_id=item) if backups:
                leases[item] = replace(leases[item], backed_up=True)
                started += 1
                run(item, node, now, backup=True)
            case _:
                retry = decision.retry_after_s if isinstance(decision, Wait) else \
                    policy.idle_retry_s
                push(now + delay_s + retry, _ASK, node)

    def record(copy: _Copy, now: float) -> None:
        nonlocal done, won
        took = now - copy.leased_at
        before = item_s.get(copy.node)
        item_s[copy.node] = took if before is None else (
            ITEM_TIME_WEIGHT * took + (1 - ITEM_TIME_WEIGHT) * before)
        views[copy.node] = NodeView(id=copy.node, models=models,
                                    item_s={MODEL: item_s[copy.node]})
        done += 1
        won += copy.backup
        del leases[copy.item]
        for other in running.pop(copy.item):
            if other is not copy:  # the loser stops when the cancel reaches it
                other.cancelled = True
                push(min(other.ends, now + half) + half, _ASK, other.node)

    for node in range(len(case.speeds)):
        push(half, _ASK, node)
    while events:
        now, _, kind, node, copy = heapq.heappop(events)
        if kind == _RESULT:
            assert copy is not None
            if copy.cancelled:
                continue
            record(copy, now)
            if done == len(case.work):
                return Outcome(makespan=now, drained=drained, backups_started=started,
                               backups_won=won)
        ask(node, now)
    raise RuntimeError("the simulation ran out of events before the job finished")


# --- what if: each piece on or off, tried on the same cases ---------------------------


def oldest_first(case: Case) -> Case:
    """The job as the store leased it before size hints: every hint equal, so the oldest
    pending item goes first."""
    return replace(case, hint=(0.0,) * len(case.work))


def exact_hints(case: Case) -> Case:
    """The job with hints that are the items' true work (sigma 0)."""
    return replace(case, hint=case.work)


def clairvoyant(case: Case) -> Outcome:
    """A reference that knows every item's time: largest first, each on the node where
    it ends earliest (LPT/HEFT), no network cost."""
    free = [0.0] * len(case.speeds)
    for item in sorted(range(len(case.work)), key=lambda i: -case.work[i]):
        work = case.work[item] * case.noise[item][0]
        ends = [finish_time(case, node, free[node], work) for node in range(len(free))]
        best = min(range(len(free)), key=ends.__getitem__)
        free[best] = ends[best]
    return Outcome(makespan=max(free))


# --- the tables -----------------------------------------------------------------------


def policies(*, delay_s: float) -> dict[str, Callable[[Case], Outcome]]:
    return {"pull": lambda c: simulate(c, delay_s=delay_s),
            "no backup": lambda c: simulate(c, backups=False, delay_s=delay_s),
            "static": static_split}


def what_ifs(*, delay_s: float) -> dict[str, Callable[[Case], Outcome]]:
    return {"FIFO": lambda c: simulate(oldest_first(c), delay_s=delay_s),
            "pull": lambda c: simulate(c, delay_s=delay_s),
            "exact": lambda c: simulate(exact_hints(c), delay_s=delay_s),
            "clairv.": clairvoyant}


@dataclass(frozen=True)
class Row:
    ratios: tuple[float, ...]  # makespan / ideal, per seed
    drained: float  # mean time the queue ran dry / ideal
    started: int
    won: int


def measure(runs: Mapping[str, Callable[[Case], Outcome]], *, nodes: int, items: int,
            scenario: str, seeds: Sequence[int], item_s: float,
            hint_sigma: float) -> dict[str, Row]:
    """Each policy's makespan / ideal over `seeds`."""
    found: dict[str, list[tuple[float, Outcome]]] = {name: [] for name in runs}
    for seed in seeds:
        case = draw_case(nodes=nodes, items=items, seed=seed, scenario=scenario,
                         item_s=item_s, hint_sigma=hint_sigma)
        best = ideal(case)
        for name, run in runs.items():
            found[name].append((best, run(case)))
    return {name: Row(ratios=tuple(o.makespan / best for best, o in outcomes),
                      drained=statistics.mean(o.drained / best for best, o in outcomes),
                      started=sum(o.backups_started for _, o in outcomes),
                      won=sum(o.backups_won for _, o in outcomes))
            for name, outcomes in found.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--nodes", type=int, nargs="+", default=[4, 16, 64, 256])
    parser.add_argument("--per-node", type=int, nargs="+", default=[20, 5],
                        help="items per node: M = this x N")
    parser.add_argument("--delay-ms", type=float, default=5.0, help="request round trip")
    parser.add_argument("--item-s", type=float, default=1.0,
                        help="mean seconds of one item on a speed-1.0 node")
    parser.add_argument("--hint-sigma", type=float, default=0.5,
                        help="sigma of the size hints' lognormal error (0: exact)")
    parser.add_argument("--what-if", action="store_true",
                        help="instead, pull with scheduler changes (worst / mean per cell)")
    args = parser.parse_args()
    seeds = range(args.seeds)
    delay_s = args.delay_ms / 1e3
    clock = time.perf_counter()
    print(f"{args.seeds} seeds; round trip {args.delay_ms:g} ms; mean item {args.item_s:g} s "
          f"on a Pi 4; size hints off by sigma {args.hint_sigma:g}; makespan / ideal, worst "
          "and mean over the seeds" + ("" if args.what_if else "; drained: when the queue ran "
          "dry / ideal (mean); backups started / won, summed over the seeds"))
    cases = [(nodes, per_node * nodes, scenario) for per_node in args.per_node
             for nodes in args.nodes for scenario in ("A", "B")]
    if args.what_if:
        runs = what_ifs(delay_s=delay_s)
        print(f"{'N':>4}{'M':>6}  scen" + "".join(f"{name:>14}" for name in runs))
        for nodes, items, scenario in cases:
            rows = measure(runs, nodes=nodes, items=items, scenario=scenario, seeds=seeds,
                           item_s=args.item_s, hint_sigma=args.hint_sigma)
            print(f"{nodes:>4}{items:>6}  {scenario:<4}" + "".join(
                f"{max(r.ratios):>8.3f} {statistics.mean(r.ratios):.3f}" for r in rows.values()))
        print(f"{time.perf_counter() - clock:.1f} s")
        return
    print(f"{'N':>4}{'M':>6}  scen  {'policy':<10}{'worst':>7}{'mean':>7}{'drained':>9}"
          f"{'backups':>10}  target")
    failed = 0
    for nodes, items, scenario in cases:
        rows = measure(policies(delay_s=delay_s), nodes=nodes, items=items,
                       scenario=scenario, seeds=seeds, item_s=args.item_s,
                       hint_sigma=args.hint_sigma)
        for name, row in rows.items():
            verdict = ""
            if name == "pull":
                ok = max(row.ratios) <= TARGETS[scenario]
                failed += not ok
                verdict = f"≤ {TARGETS[scenario]:.2f} {'PASS' if ok else 'FAIL'}"
            pulled = name != "static"
            backups = f"{row.started}/{row.won}" if pulled else "-"
            drained = f"{row.drained:.3f}" if pulled else "-"
            print(f"{nodes:>4}{items:>6}  {scenario:<4}  {name:<10}{max(row.ratios):>7.3f}"
                  f"{statistics.mean(row.ratios):>7.3f}{drained:>9}{backups:>10}  {verdict}")
    print(f"{failed} of {len(cases)} pull rows over target; {time.perf_counter() - clock:.1f} s")


if __name__ == "__main__":
    main()
