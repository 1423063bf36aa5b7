"""Striped distribution trees: how a file travels from the root to every node.

A single k-ary tree makes every interior node upload k copies, so on links of bandwidth
B a file of S bytes takes about k·S/B to reach the leaves, and the leaves, half the
fleet, upload nothing. Like SplitStream, we cut the file into k stripes (chunk i belongs
to stripe i mod k) and send each stripe down its own k-ary tree over the same nodes,
arranged so that a node is interior in (about) one stripe tree only: it then uploads
k children × S/k ≈ S, every node's uplink is used, and the whole file arrives in about
S/B plus one chunk time per level. The root sends each stripe to one node only, so the
origin sends the file about once.

Stripe tree j is a heap order o of the positions 1..N: node o[0] takes the stripe from
the root and node o[i] from o[(i-1)//k], so its interior nodes are the first
⌈(N-1)/k⌉ of o. The order starts with position j + 1 (the root's children in the
overlay tree head the stripe trees, so the coordinator's stripes reach them without a
relay in between), then the other positions past k rotated by j blocks of interior
size, then the other heads, as leaves. So the interiors are disjoint: for k = 2 every
node uploads at most S and the root exactly S. For k ≥ 3, when k·⌈(N-1)/k⌉ > N the last
tree's interior wraps onto the first's and a few nodes upload up to 2·S. With fan-out
k ≥ N (the star) there is one stripe and every node takes it from the root.
When a node is down, its children in a stripe tree take that stripe from the nearest
live ancestor in the same tree. Pure functions; no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable

from topology.overlay import ROOT, TopologyError

__all__ = ["stripe_count", "stripe_order", "stripe_parent", "stripe_sources",
           "stripe_uploads"]


def _check(nodes: int, fanout: int) -> None:
    if nodes < 0:
        raise TopologyError(f"nodes must be >= 0, got {nodes}")
    if fanout < 1:
        raise TopologyError(f"fanout must be >= 1, got {fanout}")


def stripe_count(*, nodes: int, fanout: int) -> int:
    """How many stripes a file is cut into: the fan-out, or 1 for a star (k ≥ N)."""
    _check(nodes, fanout)
    return 1 if fanout >= nodes or fanout == 1 else fanout


def stripe_order(stripe: int, *, nodes: int, fanout: int) -> list[int]:
    """The positions of stripe tree ``stripe`` in heap order (its first node hangs under
    the root)."""
    count = stripe_count(nodes=nodes, fanout=fanout)
    if not 0 <= stripe < count:
        raise TopologyError(f"stripe {stripe} does not exist; there are {count}")
    if count == 1:
        return list(range(1, nodes + 1))
    head, others = stripe + 1, list(range(count + 1, nodes + 1))
    block = -(-(nodes - 1) // fanout) - 1  # interior nodes of a tree besides its head
    shift = stripe * block % len(others) if others else 0
    return [head, *others[shift:], *others[:shift],
            *(h for h in range(1, count + 1) if h != head)]


def stripe_parent(node: int, stripe: int, *, nodes: int, fanout: int) -> int:
    """Where ``node`` takes ``stripe`` from while every node is up (ROOT for the head of
    a stripe tree, and for every node of a star)."""
    if not 1 <= node <= nodes:
        raise TopologyError(f"unknown node {node}; valid positions are 1..{nodes}")
    count = stripe_count(nodes=nodes, fanout=fanout)
    if count == 1 and fanout >= nodes:
        return ROOT
    order = stripe_order(stripe, nodes=nodes, fanout=fanout)
    index = order.index(node)
    return ROOT if index == 0 else order[(index - 1) // fanout]


def stripe_sources(node: int, *, nodes: int, fanout: int,
                   down: Iterable[int] = ()) -> tuple[int, ...]:
    """For each stripe, the node ``node`` takes it from: its parent in that stripe tree,
    or the nearest ancestor there that is not ``down`` (the root at worst)."""
    dead = frozenset(down) - {ROOT}
    sources = []
    for stripe in range(stripe_count(nodes=nodes, fanout=fanout)):
        source = stripe_parent(node, stripe, nodes=nodes, fanout=fanout)
        while source != ROOT and source in dead:
            source = stripe_parent(source, stripe, nodes=nodes, fanout=fanout)
        sources.append(source)
    return tuple(sources)


def stripe_uploads(*, nodes: int, fanout: int, down: Iterable[int] = ()) -> dict[int, int]:
    """How many stripe copies each node (and the root, 0) sends when the nodes not
    ``down`` fetch by :func:`stripe_sources`; a stripe is 1/`stripe_count` of the file."""
    dead = frozenset(down) - {ROOT}
    uploads = dict.fromkeys([ROOT, *range(1, nodes + 1)], 0)
    for node in range(1, nodes + 1):
        if node not in dead:
            for source in stripe_sources(node, nodes=nodes, fanout=fanout, down=dead):
                uploads[source] += 1
    return uploads
