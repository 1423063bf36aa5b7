"""The fleet's overlay as the API shows it: registered nodes placed in the tree plus De
Bruijn overlay in join order (node ids are stable, so positions are too), with which
nodes and links are up and each node's route to the coordinator around the ones down.

Each live node's `via` lists the positions its traffic actually passed through on the
way to the hub (nearest first; empty when it is linked to the hub directly), as the hub
saw it in the node's last message; `mode` is `overlay` once any node is relayed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from topology import ROOT, Overlay
from topology.stripes import stripe_count

UP_STATES = ("joining", "ready", "busy", "draining")  # linked, so it routes and relays


def positions(pinned: Iterable[tuple[int, bool]]) -> dict[int, int]:
    """Overlay position of each node, from (node id, pinned to a key): pinned nodes in
    id (join) order, from 1. The hub places nodes by this rule and the API shows it."""
    return {node_id: where for where, node_id in
            enumerate(sorted(i for i, is_pinned in pinned if is_pinned), start=1)}


def _placed(nodes: Sequence[dict[str, Any]]
            ) -> tuple[list[dict[str, Any]], dict[int, int], frozenset[int]]:
    """The placed API node views in position order, their positions, and those down."""
    position = positions((n["id"], not n.get("revoked", False)) for n in nodes)
    placed = sorted((n for n in nodes if n["id"] in position), key=lambda n: n["id"])
    down = frozenset(position[n["id"]] for n in placed if n["state"] not in UP_STATES)
    return placed, position, down


def overlay_view(*, nodes: Sequence[dict[str, Any]], fanout: int,
                 routes: Mapping[int, list[int]] | None = None,
                 origin_bytes_sent: int | None = None) -> dict[str, Any]:
    """`nodes` are API node views (id, name, state, revoked), in any order; `routes` the
    hub's observed paths (node ids, the hub's neighbour first) of the live nodes;
    `origin_bytes_sent` the model bytes the coordinator served since it started."""
    routes = routes or {}
    placed, position, down = _placed(nodes)
    overlay = Overlay(nodes=len(placed), fanout=fanout)
    rows: list[dict[str, Any]] = [
        {"position": ROOT, "node_id": None, "name": "coordinator", "state": "ready",
         "up": True, "parent": None, "route_to_root": [ROOT]}]
    for node in placed:
        where = position[node["id"]]
        rows.append({"position": where, "node_id": node["id"], "name": node["name"],
                     "state": node["state"], "up": where not in down,
                     "parent": overlay.parent(where),
                     "route_to_root": overlay.route_to_root(where, down=down),
                     "via": [position.get(n, 0) for n in reversed(routes[node["id"]][:-1])]
                     if node["id"] in routes else None})
    edges = [{"a": e.a, "b": e.b, "kind": e.kind, "up": not down & {e.a, e.b}}
             for e in overlay.edges()]
    relayed = any(len(r) > 1 for r in routes.values())
    return {"mode": "overlay" if relayed else "star", "fanout": fanout, "nodes": rows,
            "edges": edges,
            "down": sorted(down), "stats": vars(overlay.stats()),
            "cut_off": [r["position"] for r in rows[1:]
                        if r["up"] and r["route_to_root"] is None],
            "distribution": {"stripes": stripe_count(nodes=len(placed), fanout=fanout),
                             "origin_bytes_sent": origin_bytes_sent}}


def overlay_svg(*, nodes: Sequence[dict[str, Any]], fanout: int) -> str:
    placed, _, down = _placed(nodes)
    return Overlay(nodes=len(placed), fanout=fanout).svg(down=down)
