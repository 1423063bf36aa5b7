"""GET /api/v1/topology: registered nodes placed in the overlay in join order, with the
links and routes that are up given each node's state."""

from __future__ import annotations

from datetime import timedelta

from fastapi.testclient import TestClient

from coordinator import store as st
from coordinator.db import NodeRow, utcnow
from coordinator.overlay_view import overlay_view, positions

API = "/api/v1"


def node(node_id: int, state: str) -> dict[str, object]:
    return {"id": node_id, "name": f"pi-{node_id}", "state": state}


def test_positions_follow_node_ids_and_routes_avoid_nodes_that_are_down() -> None:
    nodes = [node(i, "ready") for i in (7, 3, 4, 5, 6, 8, 9)]  # ids 3..9 → positions 1..7
    nodes[1] = node(3, "unreachable")  # position 1: an interior node of the binary tree
    view = overlay_view(nodes=nodes, fanout=2)
    rows = {r["position"]: r for r in view["nodes"]}
    assert [rows[p]["node_id"] for p in range(1, 8)] == [3, 4, 5, 6, 7, 8, 9]
    assert view["down"] == [1] and rows[1]["up"] is False
    assert rows[3]["parent"] == 1, "its tree parent is down ..."
    route = rows[3]["route_to_root"]
    assert route[0] == 3 and route[-1] == 0 and 1 not in route, "... so it goes around"
    assert all(not e["up"] for e in view["edges"] if 1 in (e["a"], e["b"]))
    assert view["cut_off"] == [] and view["mode"] == "star"
    assert view["stats"]["nodes"] == 7 and view["stats"]["fanout"] == 2


def test_a_node_cut_off_from_every_route_is_listed() -> None:
    view = overlay_view(nodes=[node(1, "left"), node(2, "ready")], fanout=1)  # a chain
    assert view["cut_off"] == [2]


def test_topology_route_serves_json_and_svg(store: st.Store, client: TestClient) -> None:
    for name in ("pi-a", "pi-b", "pi-c"):
        st.upsert_node(store, name=name, facts={"cores": 4}, runtime="process")
    with store.session.begin() as s:  # pi-b fell silent a minute ago
        row = s.query(NodeRow).filter_by(name="pi-b").one()
        row.last_seen = utcnow() - timedelta(minutes=1)
    view = client.get(f"{API}/topology").json()
    assert [(r["name"], r["up"]) for r in view["nodes"]] == [
        ("coordinator", True), ("pi-a", True), ("pi-b", False), ("pi-c", True)]
    svg = client.get(f"{API}/topology", params={"format": "svg"})
    assert svg.headers["content-type"].startswith("image/svg+xml")
    assert svg.text.count("<circle") == 4 and 'fill="#fca5a5"' in svg.text
    assert client.get(f"{API}/topology", params={"format": "png"}).status_code == 422


def test_revoked_nodes_are_not_placed_as_the_hub_places_them() -> None:
    nodes = [node(1, "ready"), {**node(2, "left"), "revoked": True}, node(3, "ready")]
    view = overlay_view(nodes=nodes, fanout=2)
    assert [(r["position"], r["node_id"]) for r in view["nodes"][1:]] == [(1, 1), (2, 3)]
    assert positions([(3, True), (1, True), (2, False)]) == {1: 1, 3: 2}
