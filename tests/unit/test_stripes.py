"""Property tests (hypothesis) of the striped distribution trees: every stripe reaches
every node, depth stays logarithmic, the origin sends the file about once, uploads are
spread over the nodes, and failed nodes are bypassed within their stripe tree."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.test_topology_properties import ceil_log
from topology import ROOT, TopologyError
from topology.stripes import (
    stripe_count,
    stripe_order,
    stripe_parent,
    stripe_sources,
    stripe_uploads,
)

fleets = st.tuples(st.integers(min_value=1, max_value=200), st.integers(min_value=1, max_value=6))


def path_to_root(node: int, stripe: int, *, nodes: int, fanout: int) -> list[int]:
    path = [node]
    while path[-1] != ROOT:
        path.append(stripe_parent(path[-1], stripe, nodes=nodes, fanout=fanout))
        assert len(path) <= nodes + 1, "a stripe tree has a cycle"
    return path


@given(fleets)
def test_every_stripe_tree_spans_the_nodes_with_logarithmic_depth(fleet: tuple[int, int]
                                                                   ) -> None:
    n, k = fleet
    bound = n if k == 1 else ceil_log(n, k) + 1
    for stripe in range(stripe_count(nodes=n, fanout=k)):
        assert sorted(stripe_order(stripe, nodes=n, fanout=k)) == list(range(1, n + 1))
        for node in range(1, n + 1):
            assert len(path_to_root(node, stripe, nodes=n, fanout=k)) - 1 <= max(bound, 1)


@given(fleets)
def test_the_origin_sends_the_file_about_once_and_no_node_more_than_twice(
        fleet: tuple[int, int]) -> None:
    n, k = fleet
    stripes = stripe_count(nodes=n, fanout=k)
    uploads = stripe_uploads(nodes=n, fanout=k)
    if k >= n:  # the star: everyone from the origin
        assert stripes == 1 and uploads[ROOT] == n
        return
    assert uploads[ROOT] == stripes  # one copy of each stripe: the file once
    assert sum(uploads.values()) == n * stripes  # every node gets every stripe once
    worst = max(uploads[node] for node in range(1, n + 1))
    assert worst <= (stripes if k <= 2 else 2 * stripes)  # S for k = 2, 2·S beyond


def test_fanout_two_uses_every_interior_node_once() -> None:
    uploads = stripe_uploads(nodes=7, fanout=2)
    assert uploads == {0: 2, 1: 2, 2: 2, 3: 2, 4: 2, 5: 2, 6: 2, 7: 0}
    # headed by the root's children in the overlay tree; interiors {1, 3, 4}, {2, 5, 6}
    assert stripe_order(0, nodes=7, fanout=2) == [1, 3, 4, 5, 6, 7, 2]
    assert stripe_order(1, nodes=7, fanout=2) == [2, 5, 6, 7, 3, 4, 1]
    assert stripe_sources(1, nodes=7, fanout=2) == (ROOT, 6)  # 2 → 5, 6; 6 → 4, 1


@settings(max_examples=200)
@given(fleets, st.data())
def test_sources_bypass_down_nodes_within_their_stripe_tree(
        fleet: tuple[int, int], data: st.DataObject) -> None:
    n, k = fleet
    down = set(data.draw(st.lists(st.integers(1, n), max_size=n)))
    node = data.draw(st.integers(1, n))
    sources = stripe_sources(node, nodes=n, fanout=k, down=down)
    assert len(sources) == stripe_count(nodes=n, fanout=k)
    for stripe, source in enumerate(sources):
        assert source not in down
        ancestors = path_to_root(node, stripe, nodes=n, fanout=k)[1:]
        assert source in ancestors
        # every ancestor below the chosen one is down
        assert set(ancestors[:ancestors.index(source)]) <= down


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(TopologyError, match="fanout"):
        stripe_count(nodes=3, fanout=0)
    with pytest.raises(TopologyError, match="unknown node"):
        stripe_parent(4, 0, nodes=3, fanout=2)
    with pytest.raises(TopologyError, match="stripe 2 does not exist"):
        stripe_order(2, nodes=5, fanout=2)
