"""Changing and removing models through the API (agents then replace or stop workers),
node-level errors on the node views, and the refusal of a store from an older schema."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from coordinator import store as st
from coordinator.api import create_app
from coordinator.errors import SchemaError
from node_agent.hardware import node_metrics
from tests.support.tiny_gguf import write_tiny_gguf

API = "/api/v1"


class RecordingHub:
    """Stands in for the hub: counts how often the desired workers were pushed."""

    def __init__(self) -> None:
        self.pushes = 0

    async def push_desired(self) -> None:
        self.pushes += 1


@pytest.fixture
def hub() -> RecordingHub:
    return RecordingHub()


@pytest.fixture
def api(store: st.Store, hub: RecordingHub, tmp_path: Path) -> TestClient:
    client = TestClient(create_app(store=store, hub=hub))
    gguf = write_tiny_gguf(tmp_path / "tiny.gguf")
    response = client.post(f"{API}/models", json={"name": "tiny", "path": str(gguf),
                                                  "cpus": 1.5, "memory_mb": 768})
    assert response.status_code == 201, response.text
    return client


def model(api: TestClient) -> dict[str, Any]:
    (row,) = api.get(f"{API}/models").json()
    return row  # type: ignore[no-any-return]


def test_limits_given_at_registration_are_listed(api: TestClient) -> None:
    assert (model(api)["cpus"], model(api)["memory_mb"]) == (1.5, 768)


def test_patch_changes_worker_settings_and_tells_the_agents(api: TestClient,
                                                           hub: RecordingHub) -> None:
    before = hub.pushes
    response = api.patch(f"{API}/models/tiny", json={"threads": 3, "memory_mb": None})
    assert response.status_code == 200, response.text
    row = model(api)
    assert (row["threads"], row["n_ctx"], row["cpus"], row["memory_mb"]) == (3, 2048, 1.5, None)
    assert hub.pushes == before + 1


@pytest.mark.parametrize(("body", "field"), [
    ({"threads": 0}, "threads"), ({"cpus": -1}, "cpus"), ({"quant": "q8"}, "quant"),
    ({"threads": None}, "threads"), ({"memory_mb": 8}, "memory_mb"),
])
def test_bad_patch_is_refused_and_changes_nothing(api: TestClient, hub: RecordingHub,
                                                  body: dict[str, Any], field: str) -> None:
    before, pushes = model(api), hub.pushes
    response = api.patch(f"{API}/models/tiny", json=body)
    assert response.status_code == 422
    assert field in str(response.json()["detail"])
    assert model(api) == before and hub.pushes == pushes


def test_unknown_model_is_404_for_patch_and_delete(api: TestClient) -> None:
    assert api.patch(f"{API}/models/nope", json={"threads": 2}).status_code == 404
    response = api.delete(f"{API}/models/nope")
    assert response.status_code == 404 and "no model named 'nope'" in response.json()["detail"]


def test_a_model_with_running_work_cannot_be_removed_until_the_job_is_cancelled(
        api: TestClient, hub: RecordingHub) -> None:
    job = api.post(f"{API}/jobs", json={"name": "j", "models": ["tiny"], "tasks": [
        {"task": "classification", "dataset": "builtin:classification", "limit": 2}]}).json()
    response = api.delete(f"{API}/models/tiny")
    assert response.status_code == 409
    assert f"running job(s) {job['id']}" in response.json()["detail"]
    assert [m["name"] for m in api.get(f"{API}/models").json()] == ["tiny"]

    api.post(f"{API}/jobs/{job['id']}/cancel")
    pushes = hub.pushes
    assert api.delete(f"{API}/models/tiny").json() == {"name": "tiny", "removed": True}
    assert api.get(f"{API}/models").json() == [] and hub.pushes == pushes + 1
    assert api.get(f"{API}/jobs/{job['id']}").json()["state"] == "cancelled"  # results stay


def test_node_level_errors_are_shown_on_the_node_and_the_status_page(
        store: st.Store, api: TestClient) -> None:
    node = st.upsert_node(store, name="pi-07", facts={"cores": 4}, runtime="docker")
    error = "the worker image slmfleet-worker:latest is not on this node's Docker engine"
    metrics = node_metrics(model_dir=Path.cwd()).model_dump()
    st.record_metrics(store, node_id=node.id, metrics=metrics, workers=[], errors=[error])
    (view,) = api.get(f"{API}/nodes").json()
    assert view["errors"] == [error] and view["runtime"] == "docker"
    assert "slmfleet-worker:latest is not on this node" in api.get("/").text
    st.record_metrics(store, node_id=node.id, metrics=metrics, workers=[])
    assert api.get(f"{API}/nodes").json()[0]["errors"] == []


def test_a_store_made_by_an_older_version_is_refused_with_the_fix(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    st.Store(f"sqlite:///{db}")
    with sqlite3.connect(db) as connection:  # as stores were before migrations and limits
        connection.execute("DROP TABLE alembic_version")
        connection.execute("ALTER TABLE models DROP COLUMN memory_mb")
    with pytest.raises(SchemaError, match="table models lacks memory_mb. Move it aside"):
        st.Store(f"sqlite:///{db}")
