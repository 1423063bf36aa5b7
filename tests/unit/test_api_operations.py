"""Operating the coordinator over the API: cancel a job, look at one node, scrape metrics."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from coordinator import store as st
from coordinator.monitoring import render_metrics

API = "/api/v1"


@pytest.fixture
def job(store: st.Store) -> int:
    st.add_model(store, name="m", sha256="1" * 64, size=1, path="/x", threads=1, n_ctx=2048)
    from coordinator.jobs import submit_job

    return submit_job(store, {"name": "to-cancel", "models": ["m"], "limit": 4, "tasks": [
        {"task": "classification", "dataset": "builtin:classification"}]}).id


def _finish_one(store: st.Store) -> None:
    item = st.lease_next(store, model="m", node_id=1, lease_s=60)
    assert item is not None
    assert st.complete_item(store, item_id=item.id, lease_id=item.lease_id or "", node_id=1,
                            output="billing", measurement=None, error=None,
                            scorer=lambda _row, out: (out, {}))


def test_cancel_drops_open_items_and_keeps_results(client: TestClient, store: st.Store,
                                                   job: int) -> None:
    _finish_one(store)
    leased = st.lease_next(store, model="m", node_id=2, lease_s=60)
    assert leased is not None

    response = client.post(f"{API}/jobs/{job}/cancel")
    assert response.status_code == 200
    view = response.json()
    assert (view["state"], view["done"], view["cancelled"], view["pending"],
            view["leased"]) == ("cancelled", 1, 3, 0, 0)
    # nothing more is handed out, and the late result of the lease is discarded
    assert st.lease_next(store, model="m", node_id=2, lease_s=60) is None
    late = st.complete_item(store, item_id=leased.id, lease_id=leased.lease_id or "",
                            node_id=2, output="billing", measurement=None, error=None,
                            scorer=lambda _row, out: (out, {}))
    assert not late
    # cancelling again changes nothing
    again = client.post(f"{API}/jobs/{job}/cancel").json()
    assert (again["state"], again["done"], again["cancelled"]) == ("cancelled", 1, 3)


def test_a_finished_job_is_not_cancelled(client: TestClient, store: st.Store,
                                         job: int) -> None:
    for _ in range(4):
        _finish_one(store)
    assert client.post(f"{API}/jobs/{job}/cancel").json()["state"] == "finished"


def test_cancel_of_an_unknown_job_is_404(client: TestClient) -> None:
    assert client.post(f"{API}/jobs/7/cancel").status_code == 404


def _node(store: st.Store, name: str, metrics: dict[str, Any] | None) -> int:
    node = st.upsert_node(store, name=name, facts={"cores": 4}, runtime="process")
    if metrics is not None:
        st.record_metrics(store, node_id=node.id, metrics=metrics, workers=[])
    return node.id


def test_one_node_by_id(client: TestClient, store: st.Store) -> None:
    node_id = _node(store, "pi5-01", None)
    response = client.get(f"{API}/nodes/{node_id}")
    assert response.status_code == 200
    assert (response.json()["name"], response.json()["facts"]) == ("pi5-01", {"cores": 4})
    missing = client.get(f"{API}/nodes/{node_id + 1}")
    assert missing.status_code == 404 and "GET /api/v1/nodes" in missing.json()["detail"]


def test_prometheus_metrics(client: TestClient, store: st.Store, job: int) -> None:
    _node(store, "pi5-01", {"cpu_percent": 42.0, "mem_used_percent": 61.5,
                            "cpu_temp_c": 55.0})
    _node(store, "pi4-02", None)
    _finish_one(store)
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    lines = set(response.text.splitlines())
    assert 'slmfleet_nodes{state="ready"} 1.0' in lines
    assert 'slmfleet_nodes{state="joining"} 1.0' in lines  # no status report yet
    assert 'slmfleet_node_cpu_percent{node="pi5-01"} 42.0' in lines
    assert 'slmfleet_node_memory_used_percent{node="pi5-01"} 61.5' in lines
    assert 'slmfleet_node_cpu_temp_celsius{node="pi5-01"} 55.0' in lines
    assert not any('node="pi4-02"' in line for line in lines)  # no metrics reported yet
    assert 'slmfleet_jobs{state="running"} 1.0' in lines
    assert 'slmfleet_work_items{status="done"} 1.0' in lines
    assert 'slmfleet_work_items{status="pending"} 3.0' in lines
    assert "slmfleet_results_discarded 0.0" in lines
    assert "slmfleet_backup_copies_started 0.0" in lines  # no hub here: nothing counted


def test_the_hubs_scheduling_counters_are_exposed() -> None:
    text = render_metrics(nodes=[], counts={"jobs": {}, "items": {}}, discarded_results=3,
                          rejected_messages=0, backups_started=5, backups_cancelled=4,
                          leases_requeued=7).decode()
    lines = set(text.splitlines())
    assert {"slmfleet_results_discarded 3.0", "slmfleet_backup_copies_started 5.0",
            "slmfleet_backup_copies_cancelled 4.0", "slmfleet_leases_requeued 7.0"} <= lines


def test_a_node_is_drained_and_resumed_and_its_state_says_so(client: TestClient,
                                                             store: st.Store) -> None:
    node = st.upsert_node(store, name="pi-7", facts={}, runtime="process", public_key=None)
    assert client.get(f"/api/v1/nodes/{node.id}").json()["state"] == "joining"
    st.record_metrics(store, node_id=node.id, metrics={}, workers=[], errors=[])
    assert client.get(f"/api/v1/nodes/{node.id}").json()["state"] == "ready"
    drained = client.post(f"/api/v1/nodes/{node.id}/drain")
    assert drained.status_code == 200
    assert (drained.json()["state"], drained.json()["draining"]) == ("draining", True)
    assert st.draining_nodes(store) == {node.id}
    # the operator's word outlasts a reconnect
    st.upsert_node(store, name="pi-7", facts={}, runtime="process", public_key=None)
    assert client.get(f"/api/v1/nodes/{node.id}").json()["state"] == "draining"
    resumed = client.post(f"/api/v1/nodes/{node.id}/resume").json()
    assert (resumed["state"], resumed["draining"]) == ("joining", False)
    assert st.draining_nodes(store) == set()
    missing = client.post("/api/v1/nodes/999/drain")
    assert missing.status_code == 404 and "GET /api/v1/nodes" in missing.json()["detail"]
