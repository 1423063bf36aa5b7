"""Fleet overlay: a rooted k-ary tree plus generalized De Bruijn shortcut links.

The coordinator is the root (node 0) and agents are numbered 1..N in join order; agent i hangs
under parent (i - 1) // k, so with fan-out k >= N the tree degenerates naturally into a star.
On top of the tree, each vertex i links to (k*i + j) mod (N + 1) for j in 0..k-1 (self-loops and
tree duplicates dropped), giving inter-level shortcuts used to route around failed nodes.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Literal, NewType, TypeGuard

import networkx as nx

__all__ = ["ROOT", "Edge", "NodeId", "Overlay", "OverlayStats", "TopologyError"]

NodeId = NewType("NodeId", int)  # 0 is the coordinator/root
ROOT: NodeId = NodeId(0)

EdgeKind = Literal["tree", "debruijn"]


class TopologyError(ValueError):
    """Bad overlay parameters (N < 0, fanout < 1, unknown node)."""


@dataclass(frozen=True)
class Edge:
    """An undirected overlay edge, stored with ``a < b``."""

    a: int
    b: int
    kind: EdgeKind


@dataclass(frozen=True)
class OverlayStats:
    """Summary figures for an overlay; hop counts are along tree edges, over agents only."""

    nodes: int
    fanout: int
    edges: int
    tree_edges: int
    debruijn_edges: int
    max_hops_to_root: int
    mean_hops_to_root: float
    max_degree: int
    node_connectivity: int
    diameter: int


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


class Overlay:
    """Overlay over the coordinator (root 0) and ``nodes`` agents with fan-out ``fanout``."""

    def __init__(self, *, nodes: int, fanout: int) -> None:
        if not _is_int(nodes) or nodes < 0:
            raise TopologyError(f"nodes must be an integer >= 0, got {nodes!r}")
        if not _is_int(fanout) or fanout < 1:
            raise TopologyError(f"fanout must be an integer >= 1, got {fanout!r}")
        self._n = nodes
        self._k = fanout
        self._stats: OverlayStats | None = None
        total = nodes + 1
        graph: nx.Graph[int] = nx.Graph()
        graph.add_nodes_from(range(total))
        self._depth = [0] * total
        for i in range(1, total):
            parent = (i - 1) // fanout
            self._depth[i] = self._depth[parent] + 1
            graph.add_edge(parent, i, kind="tree")
        for i in range(total):
            # Residues repeat with period `total`, so at most `total` values of j matter.
            for j in range(min(fanout, total)):
                target = (fanout * i + j) % total
                if target != i and not graph.has_edge(i, target):
                    graph.add_edge(i, target, kind="debruijn")
        self._graph = graph

    @property
    def nodes(self) -> int:
        """Number of agents N (the root is not counted)."""
        return self._n

    @property
    def fanout(self) -> int:
        """Tree fan-out k."""
        return self._k

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Overlay):
            return NotImplemented
        return (self._n, self._k) == (other._n, other._k)

    def __hash__(self) -> int:
        return hash((self._n, self._k))

    def __repr__(self) -> str:
        return f"Overlay(nodes={self._n}, fanout={self._k})"

    def _check(self, node: int) -> int:
        if not _is_int(node) or not 0 <= node <= self._n:
            raise TopologyError(f"unknown node {node!r}; valid ids are 0..{self._n}")
        return node

    def parent(self, node: int) -> int | None:
        """Tree parent of ``node``; ``None`` for the root."""
        if self._check(node) == ROOT:
            return None
        return (node - 1) // self._k

    def children(self, node: int) -> list[int]:
        """Tree children of ``node`` in ascending order."""
        first = self._k * self._check(node) + 1
        return list(range(first, min(first + self._k, self._n + 1)))

    def neighbours(self, node: int) -> list[int]:
        """All overlay neighbours (tree and De Bruijn), sorted."""
        return sorted(self._graph.adj[self._check(node)])

    def path_to_root(self, node: int) -> list[int]:
        """Path from ``node`` to the root along tree edges, e.g. ``[5, 1, 0]``."""
        path = [self._check(node)]
        while path[-1] != ROOT:
            path.append((path[-1] - 1) // self._k)
        return path

    def route_to_root(self, node: int, *, down: frozenset[int] = frozenset()) -> list[int] | None:
        """Shortest overlay path from ``node`` to the root avoiding ``down`` nodes.

        The tree path is returned when none of its nodes is down. The root is never considered
        down. Returns ``None`` when ``node`` itself is down or every route is cut off.
        """
        self._check(node)
        blocked = set(down) - {ROOT}
        if node in blocked:
            return None
        tree_path = self.path_to_root(node)
        if blocked.isdisjoint(tree_path):
            return tree_path
        previous: dict[int, int | None] = {node: None}
        queue = deque([node])
        while queue:
            current = queue.popleft()
            if current == ROOT:
                path = [current]
                while (step := previous[path[-1]]) is not None:
                    path.append(step)
                return path[::-1]
            for nxt in sorted(self._graph.adj[current]):
                if nxt not in previous and nxt not in blocked:
                    previous[nxt] = current
                    queue.append(nxt)
        return None

    def edges(self) -> list[Edge]:
        """Every undirected edge once, with ``a < b``, sorted by ``(a, b)``."""
        found = [Edge(min(u, v), max(u, v), data["kind"])
                 for u, v, data in self._graph.edges(data=True)]
        return sorted(found, key=lambda e: (e.a, e.b))

    def stats(self) -> OverlayStats:
        """Structural statistics (computed once and cached)."""
        if self._stats is None:
            graph = self._graph
            tree = self._n
            agent_depths = self._depth[1:]
            self._stats = OverlayStats(
                nodes=self._n,
                fanout=self._k,
                edges=graph.number_of_edges(),
                tree_edges=tree,
                debruijn_edges=graph.number_of_edges() - tree,
                max_hops_to_root=max(agent_depths, default=0),
                mean_hops_to_root=(sum(agent_depths) / len(agent_depths)) if agent_depths else 0.0,
                max_degree=max((d for _, d in graph.degree()), default=0),
                node_connectivity=int(nx.node_connectivity(graph)),
                diameter=nx.diameter(graph),
            )
        return self._stats

    def snapshot(self) -> dict[str, object]:
        """JSON-serialisable description of the overlay; see :meth:`from_snapshot`."""
        return {
            "nodes": self._n,
            "fanout": self._k,
            "edges": self._edge_dicts(),
            "parents": {str(i): self.parent(i) for i in range(self._n + 1)},
            "stats": asdict(self.stats()),
        }

    @classmethod
    def from_snapshot(cls, data: Mapping[str, object]) -> Overlay:
        """Rebuild an overlay from :meth:`snapshot` output, checking edges and parents agree.

        ``nodes`` and ``fanout`` are required; ``edges`` and ``parents`` are optional but must
        match the recomputed layout when present. ``stats`` is derived and ignored.
        """
        if not isinstance(data, Mapping):
            raise TopologyError(f"snapshot must be a mapping, got {type(data).__name__}")
        missing = [key for key in ("nodes", "fanout") if key not in data]
        if missing:
            raise TopologyError(f"snapshot is missing {', '.join(missing)}")
        nodes, fanout = data["nodes"], data["fanout"]
        if not _is_int(nodes) or not _is_int(fanout):
            raise TopologyError("snapshot 'nodes' and 'fanout' must be integers")
        overlay = cls(nodes=nodes, fanout=fanout)
        if "edges" in data:
            if data["edges"] != overlay._edge_dicts():
                raise TopologyError("snapshot edges do not match nodes/fanout")
        if "parents" in data:
            parents = {str(i): overlay.parent(i) for i in range(nodes + 1)}
            if data["parents"] != parents:
                raise TopologyError("snapshot parents do not match nodes/fanout")
        return overlay

    def _edge_dicts(self) -> list[dict[str, object]]:
        return [{"a": e.a, "b": e.b, "kind": e.kind} for e in self.edges()]
