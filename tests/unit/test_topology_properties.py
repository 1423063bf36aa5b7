"""Property tests (hypothesis) of the overlay: hop bounds, routing around failures, stable
joins, loop-free hop-by-hop forwarding and broadcast plans that agree with the routes."""

from __future__ import annotations

import networkx as nx
from hypothesis import given, settings
from hypothesis import strategies as st

from topology import ROOT, Overlay
from topology.overlay import debruijn_modulus

fleets = st.tuples(st.integers(min_value=0, max_value=300), st.integers(min_value=1, max_value=8))


def ceil_log(n: int, k: int) -> int:
    """ceil(log_k(n)) for n >= 1, with integers (0 for k == 1 is not used)."""
    h, power = 0, 1
    while power < n:
        power *= k
        h += 1
    return h


def graph_of(overlay: Overlay, down: set[int]) -> nx.Graph[int]:
    graph: nx.Graph[int] = nx.Graph()
    graph.add_nodes_from(n for n in range(overlay.nodes + 1) if n not in down)
    graph.add_edges_from((e.a, e.b) for e in overlay.edges()
                         if e.a not in down and e.b not in down)
    return graph


@given(fleets)
def test_tree_hops_to_root_are_logarithmic(fleet: tuple[int, int]) -> None:
    n, k = fleet
    overlay = Overlay(nodes=n, fanout=k)
    if n == 0 or k == 1:
        return
    bound = ceil_log(n + 1, k) + 1
    assert all(len(overlay.path_to_root(node)) - 1 <= bound for node in range(1, n + 1))


@settings(max_examples=200)
@given(fleets, st.data())
def test_a_route_to_the_root_exists_exactly_when_failures_leave_a_path(
        fleet: tuple[int, int], data: st.DataObject) -> None:
    n, k = fleet
    if n == 0:
        return
    overlay = Overlay(nodes=n, fanout=k)
    down = set(data.draw(st.lists(st.integers(1, n), max_size=max(k - 1, 1))))
    node = data.draw(st.integers(1, n))
    route = overlay.route_to_root(node, down=frozenset(down))
    graph = graph_of(overlay, down)
    reachable = node not in down and nx.has_path(graph, node, ROOT)
    assert (route is not None) == reachable
    if route is not None:
        assert route[0] == node and route[-1] == ROOT
        assert not down & set(route)
        assert all(graph.has_edge(a, b) for a, b in zip(route, route[1:], strict=False))


@settings(max_examples=60)
@given(st.integers(min_value=7, max_value=120), st.integers(min_value=2, max_value=5),
       st.data())
def test_fewer_than_k_failures_of_interior_nodes_leave_most_of_the_fleet_reachable(
        n: int, k: int, data: st.DataObject) -> None:
    """With f <= k - 1 nodes down, a node whose tree path is cut still reaches the root
    over the shortcuts whenever the overlay minus the failures connects it."""
    overlay = Overlay(nodes=n, fanout=k)
    down = set(data.draw(st.lists(st.integers(1, n), min_size=1, max_size=k - 1)))
    graph = graph_of(overlay, down)
    for node in range(1, n + 1):
        if node in down:
            continue
        tree_cut = bool(down & set(overlay.path_to_root(node)))
        route = overlay.route_to_root(node, down=frozenset(down))
        if nx.has_path(graph, node, ROOT):
            assert route is not None, (node, down)
            if not tree_cut:
                assert route == overlay.path_to_root(node), "the tree path is preferred"


@given(fleets)
def test_a_join_changes_at_most_2k_plus_1_links_unless_the_modulus_grows(
        fleet: tuple[int, int]) -> None:
    n, k = fleet
    before, after = Overlay(nodes=n, fanout=k), Overlay(nodes=n + 1, fanout=k)
    changed = before.links() ^ after.links()
    assert before.edges_changed_by_join() == len(changed)
    if debruijn_modulus(n + 1, k) == debruijn_modulus(n + 2, k):
        assert len(changed) <= 2 * k + 1
        assert all(n + 1 in link for link in changed), "only the newcomer's links change"


@settings(max_examples=100)
@given(fleets, st.data())
def test_hop_by_hop_forwarding_reaches_the_destination_without_loops(
        fleet: tuple[int, int], data: st.DataObject) -> None:
    n, k = fleet
    if n < 2:
        return
    overlay = Overlay(nodes=n, fanout=k)
    down = frozenset(data.draw(st.lists(st.integers(1, n), max_size=2)))
    src, dst = data.draw(st.integers(0, n)), data.draw(st.integers(0, n))
    if src in down or dst in down or src == dst:
        return
    tables: dict[int, dict[int, int]] = {}
    at, hops = src, 0
    while at != dst:
        table = tables.setdefault(at, overlay.routing_table(at, down=down))
        if dst not in table:
            assert overlay.route(src, dst, down=down) is None or at != src
            return
        at = table[dst]
        assert at not in down
        hops += 1
        assert hops <= n + 1, "forwarding loops"


@given(fleets, st.data())
def test_broadcast_plan_reaches_every_reachable_node_once(fleet: tuple[int, int],
                                                          data: st.DataObject) -> None:
    n, k = fleet
    overlay = Overlay(nodes=n, fanout=k)
    down = frozenset(data.draw(st.lists(st.integers(1, max(n, 1)), max_size=2))) if n else \
        frozenset()
    plan = overlay.broadcast_plan(down=down)
    received = [node for receivers in plan.values() for node in receivers]
    assert len(received) == len(set(received)), "each node receives once"
    reachable = {node for node in range(1, n + 1)
                 if overlay.route_to_root(node, down=down) is not None}
    assert set(received) == reachable
    assert not down & (set(plan) | set(received))
    for sender, receivers in plan.items():
        assert all(sender in overlay.neighbours(r) for r in receivers)
    if not down:
        assert plan == {p: overlay.children(p) for p in range(n + 1) if overlay.children(p)}
