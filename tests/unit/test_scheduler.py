"""The scheduler's decisions on plain data: placement, priority, fair share, backups."""

from __future__ import annotations

import math

from coordinator.scheduler import (
    RESERVED_MB,
    Ask,
    Backup,
    JobView,
    LeaseView,
    ModelNeed,
    NodeRoom,
    NodeView,
    Policy,
    Take,
    Wait,
    decide,
    expected_item_s,
    model_memory_mb,
    place,
    remaining_s,
)

POLICY = Policy(silent_s=2.0)


def node(node_id: int, *models: str, **kw: object) -> NodeView:
    return NodeView(id=node_id, models=frozenset(models or ("m",)), **kw)  # type: ignore[arg-type]


def fleet(*nodes: NodeView) -> dict[int, NodeView]:
    return {n.id: n for n in nodes}


# --- placement ----------------------------------------------------------------------


def test_a_node_gets_no_work_for_a_model_it_does_not_host() -> None:
    decision = decide(Ask(1, "other"), jobs=[JobView(1, pending={"other": 3})],
                      nodes=fleet(node(1, "m")), leases=[], now=0.0)
    assert isinstance(decision, Wait) and "does not host" in decision.reason


def test_a_node_short_of_memory_takes_no_new_work() -> None:
    jobs = [JobView(1, pending={"m": 3})]
    low = decide(Ask(1, "m"), jobs=jobs, nodes=fleet(node(1, free_mb=10.0)), leases=[],
                 now=0.0, policy=POLICY)
    assert isinstance(low, Wait) and low.retry_after_s == POLICY.busy_retry_s
    ok = decide(Ask(1, "m"), jobs=jobs, nodes=fleet(node(1, free_mb=500.0)), leases=[],
                now=0.0, policy=POLICY)
    assert ok == Take((1,))


def test_models_go_to_every_node_whose_memory_holds_them_in_order() -> None:
    models = [ModelNeed("big", 3000), ModelNeed("small", 500), ModelNeed("mid", 1500)]
    placed = place(models, [NodeRoom(1, 8192), NodeRoom(2, 2048 + RESERVED_MB),
                            NodeRoom(3, 1024), NodeRoom(4, None)])
    assert placed[1] == ("big", "small", "mid")  # 5000 of 7936
    assert placed[2] == ("small", "mid")  # big does not fit; then 500 + 1500 ≤ 2048
    assert placed[3] == ("small",)
    assert placed[4] == ("big", "small", "mid")  # memory unknown: hosts everything


def test_a_models_memory_is_its_limit_or_its_weights_and_context() -> None:
    assert model_memory_mb(size=2**30, n_ctx=2048, memory_mb=700) == 700
    assert model_memory_mb(size=2**30, n_ctx=2048, memory_mb=None) == 1024 * 1.1 + 128


# --- priority and fair share --------------------------------------------------------


def test_higher_priority_jobs_go_first_whatever_their_age() -> None:
    jobs = [JobView(1, priority=0, pending={"m": 5}), JobView(2, priority=5, pending={"m": 1}),
            JobView(3, priority=-1, pending={"m": 9})]
    assert decide(Ask(1, "m"), jobs=jobs, nodes=fleet(node(1)), leases=[],
                  now=0.0) == Take((2, 1, 3))


def test_jobs_of_equal_priority_share_by_items_in_flight_then_age() -> None:
    jobs = [JobView(1, pending={"m": 5}, leased=3), JobView(2, pending={"m": 5}, leased=1),
            JobView(3, pending={"m": 5}, leased=1)]
    assert decide(Ask(1, "m"), jobs=jobs, nodes=fleet(node(1)), leases=[],
                  now=0.0) == Take((2, 3, 1))


def test_fair_share_converges_to_even_slots_between_concurrent_jobs() -> None:
    """Nodes freeing slots one by one, each slot to the decided job: two jobs of equal
    priority end up holding half of the fleet's eight slots each."""
    in_flight = {1: 0, 2: 0}
    for slot in range(8):
        jobs = [JobView(j, pending={"m": 100}, leased=n) for j, n in in_flight.items()]
        decision = decide(Ask(slot, "m"), jobs=jobs, nodes=fleet(node(slot)), leases=[],
                          now=0.0)
        assert isinstance(decision, Take)
        in_flight[decision.job_ids[0]] += 1
    assert in_flight == {1: 4, 2: 4}


def test_jobs_without_pending_items_for_the_model_are_not_offered() -> None:
    jobs = [JobView(1, priority=9, pending={"other": 5}), JobView(2, pending={"m": 1})]
    assert decide(Ask(1, "m", ), jobs=jobs, nodes=fleet(node(1)), leases=[],
                  now=0.0) == Take((2,))


# --- backup tasks -------------------------------------------------------------------


def test_near_the_end_a_fast_idle_node_backs_up_the_lease_expected_last() -> None:
    nodes = fleet(node(1, item_s={"m": 1.0}), node(2, item_s={"m": 10.0}),
                  node(3, item_s={"m": 4.0}))
    leases = [LeaseView(item_id=20, job_id=1, model="m", node_id=2, started=95.0),
              LeaseView(item_id=30, job_id=1, model="m", node_id=3, started=99.0)]
    # node 2 needs ~5 s more, node 3 ~3 s; node 1 would need 1 s
    assert decide(Ask(1, "m"), jobs=[JobView(1, pending={}, leased=2)], nodes=nodes,
                  leases=leases, now=100.0) == Backup(item_id=20, job_id=1)


def test_no_backup_at_all_when_backups_are_off() -> None:
    """The same straggler that a fast idle node copies by default (the test above) is
    left alone with `--no-backups`: the node waits."""
    nodes = fleet(node(1, item_s={"m": 1.0}), node(2, item_s={"m": 10.0}, silent_s=9.0))
    leases = [LeaseView(item_id=20, job_id=1, model="m", node_id=2, started=0.0)]
    jobs = [JobView(1, pending={}, leased=1)]
    assert decide(Ask(1, "m"), jobs=jobs, nodes=nodes, leases=leases, now=100.0,
                  policy=POLICY) == Backup(item_id=20, job_id=1)
    off = decide(Ask(1, "m"), jobs=jobs, nodes=nodes, leases=leases, now=100.0,
                 policy=Policy(silent_s=2.0, backups=False))
    assert isinstance(off, Wait) and off.reason == "no work"


def test_no_backup_when_the_idle_node_would_not_finish_sooner() -> None:
    nodes = fleet(node(1, item_s={"m": 8.0}), node(2, item_s={"m": 10.0}))
    leases = [LeaseView(item_id=20, job_id=1, model="m", node_id=2, started=95.0)]
    decision = decide(Ask(1, "m"), jobs=[JobView(1)], nodes=nodes, leases=leases,
                      now=100.0)
    assert isinstance(decision, Wait) and decision.reason == "no work"


def test_no_backup_while_items_are_pending_or_twice_or_of_ones_own_lease() -> None:
    nodes = fleet(node(1, item_s={"m": 1.0}), node(2, item_s={"m": 10.0}))
    late = LeaseView(item_id=20, job_id=1, model="m", node_id=2, started=0.0)
    pending = decide(Ask(1, "m"), jobs=[JobView(1, pending={"m": 1})], nodes=nodes,
                     leases=[late], now=1.0)
    assert pending == Take((1,))
    twice = LeaseView(item_id=20, job_id=1, model="m", node_id=2, started=0.0,
                      backed_up=True)
    own = LeaseView(item_id=21, job_id=1, model="m", node_id=1, started=0.0)
    assert isinstance(decide(Ask(1, "m"), jobs=[JobView(1)], nodes=nodes,
                             leases=[twice, own], now=1.0), Wait)


def test_a_lease_on_a_silent_node_is_backed_up_before_it_is_declared_dead() -> None:
    nodes = fleet(node(1), node(2, silent_s=POLICY.silent_s))
    leases = [LeaseView(item_id=5, job_id=1, model="m", node_id=2, started=0.0)]
    assert decide(Ask(1, "m"), jobs=[JobView(1)], nodes=nodes, leases=leases, now=1.0,
                  policy=POLICY) == Backup(item_id=5, job_id=1)


def test_a_lease_of_a_node_that_is_gone_never_finishes() -> None:
    lease = LeaseView(item_id=5, job_id=1, model="m", node_id=9, started=0.0)
    assert remaining_s(lease, nodes=fleet(node(1)), now=1.0, policy=POLICY) == math.inf


def test_a_new_node_is_expected_to_work_at_the_fleets_median_pace() -> None:
    nodes = [node(1, item_s={"m": 1.0}), node(2, item_s={"m": 3.0}),
             node(3, item_s={"m": 9.0}), node(4)]
    assert expected_item_s(nodes[3], "m", nodes) == 3.0
    assert expected_item_s(nodes[3], "other", nodes) == 0.0


def test_a_lease_running_past_its_nodes_average_is_still_expected_to_take_time() -> None:
    """The latest item is the likeliest big one: it must stay a backup candidate."""
    nodes = fleet(node(1, item_s={"m": 1.0}), node(2, item_s={"m": 2.0}))
    overdue = LeaseView(item_id=7, job_id=1, model="m", node_id=2, started=0.0)
    assert remaining_s(overdue, nodes=nodes, now=5.0, policy=POLICY) == 2.5
    assert remaining_s(overdue, nodes=nodes, now=0.5, policy=POLICY) == 1.5
    assert decide(Ask(1, "m"), jobs=[JobView(1)], nodes=nodes, leases=[overdue],
                  now=5.0) == Backup(item_id=7, job_id=1)


def test_an_items_one_copy_goes_only_to_a_clearly_faster_node() -> None:
    """The holder needs ~4 s more: a node at 3 s per item would barely win and waste the
    item's one copy; a node at 2 s takes it (backup_gain 1.5)."""
    leases = [LeaseView(item_id=20, job_id=1, model="m", node_id=2, started=96.0)]
    for own, expected in ((3.0, Wait), (2.0, Backup)):
        nodes = fleet(node(1, item_s={"m": own}), node(2, item_s={"m": 8.0}))
        decision = decide(Ask(1, "m"), jobs=[JobView(1)], nodes=nodes, leases=leases,
                          now=100.0, policy=POLICY)
        assert isinstance(decision, expected), (own, decision)


def test_without_any_item_time_only_silent_nodes_leases_are_copied() -> None:
    """At a job's start nobody has an estimate: an idle node must not copy every live
    lease (it would run each item twice), only those of a silent node."""
    live = LeaseView(item_id=1, job_id=1, model="m", node_id=2, started=0.0)
    nodes = fleet(node(1), node(2))
    assert isinstance(decide(Ask(1, "m"), jobs=[JobView(1)], nodes=nodes, leases=[live],
                             now=60.0, policy=POLICY), Wait)
    nodes = fleet(node(1), node(2, silent_s=POLICY.silent_s))
    assert decide(Ask(1, "m"), jobs=[JobView(1)], nodes=nodes, leases=[live], now=60.0,
                  policy=POLICY) == Backup(item_id=1, job_id=1)
