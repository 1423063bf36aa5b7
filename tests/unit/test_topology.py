"""Unit tests for the fleet overlay topology (k-ary tree plus De Bruijn shortcuts)."""

from __future__ import annotations

import json
from collections import deque

import pytest

from topology import ROOT, Edge, Overlay, OverlayStats, TopologyError

CASES = [(0, 2), (1, 2), (7, 2), (15, 2), (20, 3), (5, 8), (100, 4), (6, 1), (3, 3)]


def ids(overlay: Overlay) -> range:
    return range(overlay.nodes + 1)


def expected_debruijn(n: int, k: int) -> set[tuple[int, int]]:
    total = n + 1
    modulus = 1 if k > 1 else total
    while k > 1 and modulus < total:
        modulus *= k
    tree = {(min(i, (i - 1) // k), max(i, (i - 1) // k)) for i in range(1, total)}
    pairs = set()
    for i in range(total):
        for j in range(k):
            t = (k * i + j) % modulus
            if t != i and t < total:
                pairs.add((min(i, t), max(i, t)))
    return pairs - tree


def min_height(n: int, k: int) -> int:
    """ceil(log_k(n + 1)) computed with integers."""
    h = 0
    while k**h < n + 1:
        h += 1
    return h


def bfs_distance(overlay: Overlay, start: int, goal: int, blocked: set[int]) -> int | None:
    seen = {start: 0}
    queue = deque([start])
    while queue:
        cur = queue.popleft()
        if cur == goal:
            return seen[cur]
        for nxt in overlay.neighbours(cur):
            if nxt not in seen and nxt not in blocked:
                seen[nxt] = seen[cur] + 1
                queue.append(nxt)
    return None


@pytest.mark.parametrize(("n", "k"), CASES)
def test_tree_structure(n: int, k: int) -> None:
    ov = Overlay(nodes=n, fanout=k)
    assert (ov.nodes, ov.fanout) == (n, k)
    assert ov.parent(ROOT) is None
    tree = [e for e in ov.edges() if e.kind == "tree"]
    assert len(tree) == n
    assert {(e.a, e.b) for e in tree} == {((i - 1) // k, i) for i in range(1, n + 1)}
    all_children: list[int] = []
    for i in ids(ov):
        kids = ov.children(i)
        assert kids == sorted(kids) and len(kids) <= k
        assert all(ov.parent(c) == i for c in kids)
        all_children.extend(kids)
        if i != ROOT:
            parent = ov.parent(i)
            assert parent is not None and i in ov.children(parent)
    assert sorted(all_children) == list(range(1, n + 1))


@pytest.mark.parametrize(("n", "k"), CASES)
def test_path_to_root(n: int, k: int) -> None:
    ov = Overlay(nodes=n, fanout=k)
    for i in ids(ov):
        path = ov.path_to_root(i)
        assert path[0] == i and path[-1] == ROOT
        assert all(ov.parent(a) == b for a, b in zip(path, path[1:], strict=False))
        if k >= 2:
            assert len(path) - 1 <= min_height(n, k) + 1
    assert ov.path_to_root(0) == [0]


def test_path_to_root_example() -> None:
    assert Overlay(nodes=7, fanout=2).path_to_root(5) == [5, 2, 0]
    assert Overlay(nodes=15, fanout=2).path_to_root(11) == [11, 5, 2, 0]
    assert Overlay(nodes=6, fanout=1).path_to_root(4) == [4, 3, 2, 1, 0]


@pytest.mark.parametrize(("n", "k"), CASES)
def test_edges_formula_and_uniqueness(n: int, k: int) -> None:
    ov = Overlay(nodes=n, fanout=k)
    edges = ov.edges()
    pairs = [(e.a, e.b) for e in edges]
    assert pairs == sorted(pairs)
    assert len(pairs) == len(set(pairs))
    assert all(e.a < e.b for e in edges)
    assert {e.kind for e in edges} <= {"tree", "debruijn"}
    debruijn = {(e.a, e.b) for e in edges if e.kind == "debruijn"}
    assert debruijn == expected_debruijn(n, k)
    for i in ids(ov):
        nbrs = ov.neighbours(i)
        assert nbrs == sorted(set(nbrs)) and i not in nbrs
        assert set(nbrs) == {e.b for e in edges if e.a == i} | {e.a for e in edges if e.b == i}


@pytest.mark.parametrize(("n", "k"), CASES)
def test_connected_and_stats(n: int, k: int) -> None:
    ov = Overlay(nodes=n, fanout=k)
    for i in ids(ov):
        assert bfs_distance(ov, i, ROOT, set()) is not None
    st = ov.stats()
    assert isinstance(st, OverlayStats)
    assert (st.nodes, st.fanout) == (n, k)
    assert st.tree_edges == n
    assert st.edges == len(ov.edges()) == st.tree_edges + st.debruijn_edges
    depths = [len(ov.path_to_root(i)) - 1 for i in range(1, n + 1)]
    assert st.max_hops_to_root == max(depths, default=0)
    assert st.mean_hops_to_root == pytest.approx(sum(depths) / n if n else 0.0)
    assert st.max_degree == max(len(ov.neighbours(i)) for i in ids(ov))
    assert st.node_connectivity >= (1 if n else 0)
    assert st.diameter <= 2 * st.max_hops_to_root
    assert ov.stats() is st


def test_small_examples() -> None:
    ov = Overlay(nodes=7, fanout=2)
    assert ov.children(0) == [1, 2]
    assert ov.children(3) == [7]
    assert ov.children(4) == []
    # 2 -> 4 and 7 -> 14 mod 8 = 6 are shortcuts; 2 -> 5 duplicates a tree edge.
    assert Edge(2, 4, "debruijn") in ov.edges()
    assert Edge(6, 7, "debruijn") in ov.edges()
    assert Edge(2, 5, "tree") in ov.edges() and Edge(2, 5, "debruijn") not in ov.edges()
    assert Edge(3, 7, "tree") in ov.edges()
    empty = Overlay(nodes=0, fanout=2)
    assert empty.edges() == [] and empty.neighbours(0) == [] and empty.children(0) == []
    assert empty.stats().diameter == 0 and empty.stats().max_hops_to_root == 0
    chain = Overlay(nodes=6, fanout=1)
    assert all(e.kind == "tree" for e in chain.edges())


@pytest.mark.parametrize(("n", "k"), [(5, 8), (3, 3), (4, 100), (1, 1)])
def test_star_when_fanout_covers_fleet(n: int, k: int) -> None:
    ov = Overlay(nodes=n, fanout=k)
    assert ov.children(ROOT) == list(range(1, n + 1))
    assert all(ov.parent(i) == ROOT for i in range(1, n + 1))
    assert all(ov.children(i) == [] for i in range(1, n + 1))
    assert ov.stats().max_hops_to_root == 1
    assert all(ov.path_to_root(i) == [i, 0] for i in range(1, n + 1))


@pytest.mark.parametrize(("n", "k"), [(7, 2), (15, 2), (20, 3), (100, 4)])
def test_route_to_root_avoids_down(n: int, k: int) -> None:
    ov = Overlay(nodes=n, fanout=k)
    for i in ids(ov):
        assert ov.route_to_root(i) == ov.path_to_root(i)
    for node in range(1, n + 1):
        tree_path = ov.path_to_root(node)
        for failed in tree_path[1:-1]:
            down = frozenset({failed})
            route = ov.route_to_root(node, down=down)
            expected = bfs_distance(ov, node, ROOT, {failed})
            if expected is None:
                assert route is None
                continue
            assert route is not None
            assert route[0] == node and route[-1] == ROOT
            assert failed not in route
            assert len(route) - 1 == expected
            assert all(b in ov.neighbours(a) for a, b in zip(route, route[1:], strict=False))


def test_route_to_root_prefers_intact_tree_path() -> None:
    ov = Overlay(nodes=15, fanout=2)
    down = frozenset({4, 9})  # not on 11's tree path [11, 5, 2, 0]
    assert ov.route_to_root(11, down=down) == [11, 5, 2, 0]
    assert ov.route_to_root(11, down=frozenset({0})) == [11, 5, 2, 0]  # root is never down


def test_route_to_root_cut_off() -> None:
    ov = Overlay(nodes=100, fanout=4)
    node = next(i for i in range(1, 101) if ROOT not in ov.neighbours(i))
    assert ov.route_to_root(node, down=frozenset(ov.neighbours(node))) is None
    assert ov.route_to_root(node, down=frozenset({node})) is None
    chain = Overlay(nodes=6, fanout=1)
    assert chain.route_to_root(5, down=frozenset({3})) is None
    assert chain.route_to_root(2, down=frozenset({3})) == [2, 1, 0]


@pytest.mark.parametrize(("n", "k"), CASES)
def test_snapshot_round_trip(n: int, k: int) -> None:
    ov = Overlay(nodes=n, fanout=k)
    snap = ov.snapshot()
    assert set(snap) == {"nodes", "fanout", "edges", "parents", "stats"}
    data = json.loads(json.dumps(snap))
    assert data["parents"]["0"] is None
    assert all(data["parents"][str(i)] == ov.parent(i) for i in range(1, n + 1))
    restored = Overlay.from_snapshot(data)
    assert restored == ov and hash(restored) == hash(ov)
    assert restored.edges() == ov.edges()
    assert restored.snapshot() == data
    assert Overlay.from_snapshot({"nodes": n, "fanout": k}) == ov


def test_from_snapshot_validates() -> None:
    good = json.loads(json.dumps(Overlay(nodes=7, fanout=2).snapshot()))
    with pytest.raises(TopologyError):
        Overlay.from_snapshot({"nodes": 7})
    with pytest.raises(TopologyError):
        Overlay.from_snapshot({**good, "nodes": "7"})
    with pytest.raises(TopologyError):
        Overlay.from_snapshot({**good, "fanout": 3})
    with pytest.raises(TopologyError):
        Overlay.from_snapshot({**good, "parents": {**good["parents"], "5": 1}})
    with pytest.raises(TopologyError):
        Overlay.from_snapshot({**good, "nodes": -1, "edges": [], "parents": {}})
    with pytest.raises(TopologyError):
        Overlay.from_snapshot([("nodes", 7)])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"nodes": -1, "fanout": 2},
        {"nodes": 3, "fanout": 0},
        {"nodes": 3, "fanout": -2},
        {"nodes": 3.0, "fanout": 2},
        {"nodes": True, "fanout": 2},
    ],
)
def test_bad_parameters(kwargs: dict[str, object]) -> None:
    with pytest.raises(TopologyError):
        Overlay(**kwargs)  # type: ignore[arg-type]
    assert issubclass(TopologyError, ValueError)


def test_unknown_node() -> None:
    ov = Overlay(nodes=7, fanout=2)
    for bad in (-1, 8, 1.5, None):
        for call in (ov.parent, ov.children, ov.neighbours, ov.path_to_root, ov.route_to_root):
            with pytest.raises(TopologyError):
                call(bad)  # type: ignore[arg-type]


def test_keyword_only_constructor() -> None:
    with pytest.raises(TypeError):
        Overlay(7, 2)  # type: ignore[misc]


def test_svg_snapshot_draws_every_node_and_link() -> None:
    import xml.etree.ElementTree as ET

    overlay = Overlay(nodes=9, fanout=2)
    root = ET.fromstring(overlay.svg(down={2}))
    ns = "{http://www.w3.org/2000/svg}"
    circles = root.findall(f"{ns}circle")
    assert sorted(int(c.get("data-node", "-1")) for c in circles) == list(range(10))
    lines = root.findall(f"{ns}line")
    assert len(lines) == len(overlay.edges())
    assert sum(1 for line in lines if line.get("class") == "tree") == 9
    faded = [line for line in lines if line.get("opacity") == "0.2"]
    assert len(faded) == len(overlay.neighbours(2)), "the down node's links are faded"
    (down,) = [c for c in circles if c.get("fill") == "#fca5a5"]
    assert down.get("data-node") == "2"


def test_routing_table_matches_routes_and_avoids_down_nodes() -> None:
    overlay = Overlay(nodes=15, fanout=2)
    table = overlay.routing_table(11, down={5})
    assert table[ROOT] == overlay.route_to_root(11, down=frozenset({5}))[1]  # type: ignore[index]
    assert 5 not in table and 5 not in table.values()
    for dst, hop in table.items():
        assert hop in overlay.neighbours(11)
        route = overlay.route(11, dst, down={5})
        assert route is not None and route[1] == hop
    assert overlay.next_hop(4, 9) == 9 and overlay.next_hop(4, 4) is None
    assert overlay.routing_table(5, down={5}) == {}


def test_join_statistics_are_reported() -> None:
    stats = Overlay(nodes=6, fanout=2).stats()
    assert stats.debruijn_modulus == 8
    assert stats.edges_changed_by_join == len(
        Overlay(nodes=6, fanout=2).links() ^ Overlay(nodes=7, fanout=2).links())
    assert stats.edges_changed_by_join <= 5
