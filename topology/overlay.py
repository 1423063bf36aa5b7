"""Fleet overlay: a rooted k-ary tree plus generalized De Bruijn shortcut links.

The coordinator is the root (node 0) and agents are numbered 1..N in join order; agent i hangs
under parent (i - 1) // k, so with fan-out k >= N the tree degenerates naturally into a star.
On top of the tree, each vertex i links to (k*i + j) mod M for j in 0..k-1, where M is the
smallest power of k that is >= N + 1; targets that are not (yet) nodes, self-loops and tree
duplicates are dropped. These inter-level shortcuts are used to route around failed nodes.

Numbering is stable: a node keeps its id, and with M fixed a join adds only the newcomer's
tree edge, its own <= k shortcuts and the <= k shortcuts that point at its id, so it
changes at most 2k + 1 links. Only when N + 1 passes a power of k does M grow (k-fold)
and the shortcuts get rewired, which happens log_k(N) times over a fleet's growth.
(With M = N + 1, the classic generalized De Bruijn graph, every join would rewire
almost every shortcut.)
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
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
    debruijn_modulus: int
    edges_changed_by_join: int  # links added or removed when agent N + 1 joins


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def debruijn_modulus(total: int, fanout: int) -> int:
    """The smallest power of ``fanout`` that is >= ``total`` (``total`` for fan-out 1)."""
    if fanout == 1:
        return max(total, 1)
    modulus = 1
    while modulus < total:
        modulus *= fanout
    return modulus


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
        self._modulus = debruijn_modulus(total, fanout)
        for i in range(total):
            # Residues repeat with period M, so at most M values of j matter.
            for j in range(min(fanout, self._modulus)):
                target = (fanout * i + j) % self._modulus
                if target < total and target != i and not graph.has_edge(i, target):
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
        return self._shortest(node, ROOT, blocked)

    def _search(self, src: int, blocked: set[int], *, stop: int | None = None
                ) -> dict[int, int | None]:
        """Breadth-first search from ``src`` around ``blocked``: each reached node's
        predecessor. Neighbours are tried in ascending order, so routes are deterministic;
        the search ends early once ``stop`` is reached."""
        previous: dict[int, int | None] = {src: None}
        queue = deque([src])
        while queue:
            current = queue.popleft()
            if current == stop:
                break
            for nxt in sorted(self._graph.adj[current]):
                if nxt not in previous and nxt not in blocked:
                    previous[nxt] = current
                    queue.append(nxt)
        return previous

    def _shortest(self, src: int, dst: int, blocked: set[int]) -> list[int] | None:
        """Breadth-first shortest path from ``src`` to ``dst``, or None if cut off."""
        previous = self._search(src, blocked, stop=dst)
        if dst not in previous:
            return None
        path = [dst]
        while (step := previous[path[-1]]) is not None:
            path.append(step)
        return path[::-1]

    def route(self, src: int, dst: int, *, down: Iterable[int] = ()) -> list[int] | None:
        """A path from ``src`` to ``dst`` avoiding ``down`` nodes, or ``None`` if cut off.

        Toward the root this is :meth:`route_to_root` (the tree path while it is intact);
        otherwise a shortest overlay path. Either way every hop is a neighbour, and a node
        forwarding by its own route makes progress, so hop-by-hop forwarding has no loops.
        """
        self._check(src)
        self._check(dst)
        blocked = set(down) - {ROOT}
        if dst == ROOT:
            return self.route_to_root(src, down=frozenset(blocked))
        if src in blocked or dst in blocked:
            return None
        return self._shortest(src, dst, blocked)

    def next_hop(self, src: int, dst: int, *, down: Iterable[int] = ()) -> int | None:
        """The neighbour ``src`` forwards to for ``dst`` (``dst`` itself when adjacent)."""
        path = self.route(src, dst, down=down)
        return path[1] if path is not None and len(path) > 1 else None

    def routing_table(self, node: int, *, down: Iterable[int] = ()) -> dict[int, int]:
        """Next hop from ``node`` to every other node it can reach while ``down`` are down
        (the first hops of :meth:`route`, from one breadth-first search)."""
        self._check(node)
        blocked = set(down) - {ROOT}
        if node in blocked:
            return {}
        first: dict[int, int] = {}
        for reached, before in self._search(node, blocked).items():  # in BFS order
            if before is not None:
                first[reached] = reached if before == node else first[before]
        if node != ROOT and (to_root := self.route_to_root(node, down=frozenset(blocked))):
            first[ROOT] = to_root[1]
        return first

    def broadcast_plan(self, *, down: Iterable[int] = ()) -> dict[int, list[int]]:
        """Who forwards a broadcast from the root to whom: ``{sender: [receivers]}``.

        Each live node receives from the next hop of its own route to the root (its tree
        parent while the tree path is intact), so the plan is a spanning tree of the live,
        reachable nodes that agrees with the routes; cut-off nodes are left out.
        """
        blocked = frozenset(down) - {ROOT}
        plan: dict[int, list[int]] = {}
        for node in range(1, self._n + 1):
            path = self.route_to_root(node, down=blocked)
            if path is not None:
                plan.setdefault(path[1], []).append(node)
        return {sender: sorted(receivers) for sender, receivers in sorted(plan.items())}

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
                debruijn_modulus=self._modulus,
                edges_changed_by_join=self.edges_changed_by_join(),
            )
        return self._stats

    def links(self) -> frozenset[tuple[int, int]]:
        """Every link as ``(a, b)`` with ``a < b``, whatever its kind."""
        return frozenset((e.a, e.b) for e in self.edges())

    def edges_changed_by_join(self) -> int:
        """How many links one more agent (id N + 1) adds or removes."""
        return len(self.links() ^ Overlay(nodes=self._n + 1, fanout=self._k).links())

    def svg(self, *, down: Iterable[int] = ()) -> str:
        """A picture of the overlay as SVG text: the tree in levels from the root at the top,
        tree links solid, shortcuts dashed, nodes in ``down`` red with their links faded."""
        blocked = set(down) - {ROOT}
        levels: dict[int, list[int]] = {}
        for node in range(self._n + 1):
            levels.setdefault(self._depth[node], []).append(node)
        width = max(len(row) for row in levels.values()) * 48 + 48
        height = len(levels) * 80 + 40
        where: dict[int, tuple[float, float]] = {}
        for depth, row in levels.items():
            step = width / (len(row) + 1)
            for index, node in enumerate(row, start=1):
                where[node] = (index * step, 40.0 + depth * 80)
        parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" '
                 f'height="{height}" font-family="sans-serif" font-size="11">',
                 f"<title>overlay: {self._n} agents, fan-out {self._k}</title>"]
        for edge in self.edges():
            (x1, y1), (x2, y2) = where[edge.a], where[edge.b]
            style = 'stroke="#555"' if edge.kind == "tree" else \
                'stroke="#3b82f6" stroke-dasharray="4 3"'
            faded = ' opacity="0.2"' if blocked & {edge.a, edge.b} else ""
            parts.append(f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" '
                         f'{style}{faded} class="{edge.kind}"/>')
        for node, (x, y) in where.items():
            fill = "#fca5a5" if node in blocked else "#fde68a" if node == ROOT else "#e5e7eb"
            parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="13" fill="{fill}" '
                         f'stroke="#111" class="node" data-node="{node}"/>')
            parts.append(f'<text x="{x:.1f}" y="{y + 4:.1f}" text-anchor="middle">{node}</text>')
        parts.append("</svg>")
        return "\n".join(parts)

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
