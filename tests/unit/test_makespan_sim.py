"""Unit tests for the makespan benchmark's simulator (`benchmarks/makespan.py`): its ideal,
its static split, its event loop, the order it leases items in, and the coordinator's
per-node estimate it keeps."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import pytest

from benchmarks.makespan import (
    Case,
    PendingItems,
    draw_case,
    exact_hints,
    finish_time,
    ideal,
    oldest_first,
    simulate,
    static_split,
)
from coordinator.scheduler import (
    Ask,
    Backup,
    Decision,
    JobView,
    LeaseView,
    NodeView,
    Policy,
    decide,
)


def case(work: Sequence[float], speeds: Sequence[float], *, slow_node: int | None = None,
         slow_at: float = float("inf"), hint: Sequence[float] | None = None) -> Case:
    """A hand-made case without per-execution noise; without `hint`, every hint is equal
    (so the oldest item is leased first)."""
    return Case(work=tuple(work), noise=((1.0, 1.0),) * len(work), speeds=tuple(speeds),
                hint=tuple(hint) if hint is not None else (0.0,) * len(work),
                slow_node=slow_node, slow_at=slow_at)


def estimates_seen(job: Case) -> list[float | None]:
    """The asking node's seconds per item at each of its asks, as `decide` sees it."""
    seen: list[float | None] = []

    def spy(ask: Ask, *, jobs: Sequence[JobView], nodes: Mapping[int, NodeView],
            leases: Sequence[LeaseView], now: float, policy: Policy) -> Decision:
        seen.append(nodes[ask.node_id].item_s.get("m"))
        return decide(ask, jobs=jobs, nodes=nodes, leases=leases, now=now, policy=policy)

    simulate(job, delay_s=0.0, decide_fn=spy)
    return seen


def test_ideal_is_total_work_over_total_speed() -> None:
    assert ideal(case([1, 2, 3], [1, 2])) == pytest.approx(2.0)


def test_ideal_counts_a_slowdown_as_lost_capacity() -> None:
    # speeds 1 + 2 until t = 1 (3 units done), then 1 + 1: the other 3 units take 1.5 s
    assert ideal(case([1, 2, 3], [1, 2], slow_node=1, slow_at=1.0)) == pytest.approx(2.5)
    # a slowdown after the work is done changes nothing
    assert ideal(case([1, 2, 3], [1, 2], slow_node=1, slow_at=5.0)) == pytest.approx(2.0)


def test_an_item_in_progress_runs_on_at_the_lower_speed() -> None:
    slowed = case([4], [2], slow_node=0, slow_at=1.0)
    assert finish_time(slowed, 0, 0.0, 4.0) == pytest.approx(3.0)  # 2 units by t = 1, 2 at 1/s
    assert finish_time(slowed, 0, 2.0, 4.0) == pytest.approx(6.0)
    assert finish_time(slowed, 0, 0.0, 1.0) == pytest.approx(0.5)


def test_static_split_deals_round_robin_and_waits_for_the_slowest_share() -> None:
    # node 0 (speed 1) gets items 0 and 2: 1 + 3 = 4 s; node 1 (speed 2) gets 1 and 3: 3 s
    assert static_split(case([1, 2, 3, 4], [1, 2])).makespan == pytest.approx(4.0)


@pytest.mark.parametrize("delay_s", [0.0, 0.005])
def test_identical_nodes_and_items_end_within_one_item_of_ideal(delay_s: float) -> None:
    even = case([1.0] * 40, [1.0] * 4)
    outcome = simulate(even, delay_s=delay_s)
    assert ideal(even) <= outcome.makespan <= ideal(even) + 1.0
    assert outcome.backups_started == 0


def test_a_seed_reproduces_the_same_case_and_outcome() -> None:
    first = draw_case(nodes=8, items=80, seed=3, scenario="B")
    again = draw_case(nodes=8, items=80, seed=3, scenario="B")
    assert first == again
    assert simulate(first) == simulate(again)
    assert draw_case(nodes=8, items=80, seed=4, scenario="B") != first


def test_scenario_b_slows_the_fastest_node_at_thirty_percent_of_the_ideal() -> None:
    slowed = draw_case(nodes=8, items=80, seed=1, scenario="B")
    assert slowed.slow_node == max(range(8), key=lambda j: slowed.speeds[j])
    assert slowed.slow_at == pytest.approx(0.3 * sum(slowed.work) / sum(slowed.speeds))


def test_the_node_estimate_is_the_hubs_weighted_average_of_lease_to_result() -> None:
    assert estimates_seen(case([1, 2, 4], [1])) == [
        None, pytest.approx(1.0), pytest.approx(0.3 * 2 + 0.7 * 1)]


def test_pending_items_lease_the_largest_hint_first_then_the_oldest() -> None:
    pending = PendingItems([1.0, 3.0, 2.0, 3.0, 0.5])
    taken = [pending.lease() for _ in range(len(pending))]
    assert taken == [1, 3, 2, 0, 4]
    assert len(pending) == 0


def test_the_simulator_leases_by_hint_and_the_fifo_what_if_by_age() -> None:
    # one node: the estimate after the first result is the time of the item leased first
    hinted = case([1, 2, 4], [1], hint=[1, 2, 4])
    assert estimates_seen(hinted)[1] == pytest.approx(4.0)
    assert estimates_seen(oldest_first(hinted))[1] == pytest.approx(1.0)
    wrong = case([1, 2, 4], [1], hint=[5, 2, 4])  # the hint takes the small item for big
    assert estimates_seen(wrong)[1] == pytest.approx(1.0)
    assert estimates_seen(exact_hints(wrong))[1] == pytest.approx(4.0)


def test_hints_are_work_times_an_error_that_sigma_scales_and_that_changes_nothing_else() -> None:
    exact = draw_case(nodes=4, items=40, seed=2, hint_sigma=0.0)
    rough = draw_case(nodes=4, items=40, seed=2, hint_sigma=0.5)
    rougher = draw_case(nodes=4, items=40, seed=2, hint_sigma=1.0)
    assert exact.hint == exact.work
    assert (rough.work, rough.noise, rough.speeds) == (exact.work, exact.noise, exact.speeds)
    assert rough.hint != rough.work
    for h, h2, w in zip(rough.hint, rougher.hint, rough.work, strict=True):
        assert math.log(h2 / w) == pytest.approx(2 * math.log(h / w))


def test_a_lease_that_has_outrun_its_holders_estimate_is_backed_up() -> None:
    # The slow node (speed 1) runs a 1.05 s item, then the 5 s one; the fast node (speed 8)
    # drains the rest by t = 3.125, when the big lease has run 2.075 s against the slow
    # node's 1.05 s per item: overdue, yet expected to need about half as long again.
    work = [1.05] + [1.0] * 9 + [5.0] + [1.0] * 16
    hint = [100.0] + [10.0] * 9 + [1.0] + [0.5] * 16
    job = case(work, [1.0, 8.0], hint=hint)
    seen: list[tuple[int, float, float]] = []

    def spy(ask: Ask, *, jobs: Sequence[JobView], nodes: Mapping[int, NodeView],
            leases: Sequence[LeaseView], now: float, policy: Policy) -> Decision:
        decision = decide(ask, jobs=jobs, nodes=nodes, leases=leases, now=now, policy=policy)
        if isinstance(decision, Backup):
            holder = next(lease for lease in leases if lease.item_id == decision.item_id)
            seen.append((decision.item_id, now - holder.started,
                         nodes[holder.node_id].item_s["m"]))
        return decision

    pulled = simulate(job, delay_s=0.0, decide_fn=spy)
    [(item, elapsed, estimate)] = seen
    assert item == 10
    assert elapsed == pytest.approx(2.075)
    assert estimate == pytest.approx(1.05)
    assert elapsed > estimate  # overdue
    assert (pulled.backups_started, pulled.backups_won) == (1, 1)
    assert pulled.makespan == pytest.approx(3.125 + 5.0 / 8)
    assert simulate(job, backups=False, delay_s=0.0).makespan == pytest.approx(1.05 + 5.0)


def test_a_fast_node_backs_up_the_last_item_of_a_slow_one_and_wins() -> None:
    mixed = case([1.0] * 20, [1.0, 10.0])
    pulled, alone = simulate(mixed, delay_s=0.0), simulate(mixed, backups=False, delay_s=0.0)
    assert pulled.backups_won >= 1
    assert pulled.makespan < alone.makespan
