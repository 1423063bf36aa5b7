"""The fleet's overlay as the API shows it: registered nodes placed in the tree plus De
Bruijn overlay in join order (node ids are stable, so positions are too), with which
nodes and links are up and each node's route to the coordinator around the ones down.

Agents still connect straight to the hub (a star); this is the layout that relaying
along the overlay uses, computed from live node states so an operator can see what a
failure would cost.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from topology import ROOT, Overlay

UP_STATES = ("ready", "busy")


def overlay_view(*, nodes: Sequence[dict[str, Any]], fanout: int) -> dict[str, Any]:
    """`nodes` are API node views (id, name, state), in any order."""
    placed = sorted(nodes, key=lambda n: n["id"])
    overlay = Overlay(nodes=len(placed), fanout=fanout)
    position = {n["id"]: index for index, n in enumerate(placed, start=1)}
    down = frozenset(position[n["id"]] for n in placed if n["state"] not in UP_STATES)
    rows: list[dict[str, Any]] = [
        {"position": ROOT, "node_id": None, "name": "coordinator", "state": "ready",
         "up": True, "parent": None, "route_to_root": [ROOT]}]
    for node in placed:
        where = position[node["id"]]
        rows.append({"position": where, "node_id": node["id"], "name": node["name"],
                     "state": node["state"], "up": where not in down,
                     "parent": overlay.parent(where),
                     "route_to_root": overlay.route_to_root(where, down=down)})
    edges = [{"a": e.a, "b": e.b, "kind": e.kind, "up": not down & {e.a, e.b}}
             for e in overlay.edges()]
    return {"mode": "star", "fanout": fanout, "nodes": rows, "edges": edges,
            "down": sorted(down), "stats": vars(overlay.stats()),
            "cut_off": [r["position"] for r in rows[1:]
                        if r["up"] and r["route_to_root"] is None]}


def overlay_svg(*, nodes: Sequence[dict[str, Any]], fanout: int) -> str:
    view = overlay_view(nodes=nodes, fanout=fanout)
    return Overlay(nodes=len(nodes), fanout=fanout).svg(down=view["down"])
