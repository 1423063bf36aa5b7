"""Unit tests for the HTTP API over a real SQLite store: bad bodies get 4xx and change nothing."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.support.tiny_gguf import write_tiny_gguf

API = "/api/v1"
MODEL = "tiny"
DATASET = "builtin:classification"


@pytest.fixture
def gguf(tmp_path: Path) -> Path:
    return write_tiny_gguf(tmp_path / "tiny.gguf")


@pytest.fixture
def registered(client: TestClient, gguf: Path) -> str:
    response = client.post(f"{API}/models", json={"name": MODEL, "path": str(gguf)})
    assert response.status_code == 201, response.text
    return MODEL


def job_body(**changes: Any) -> dict[str, Any]:
    return {"name": "api-job", "models": [MODEL],
            "tasks": [{"task": "classification", "dataset": DATASET, "limit": 3}], **changes}


def test_health(client: TestClient) -> None:
    response = client.get(f"{API}/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok" and body["nodes"] == 0 and body["hub_port"] is None


# --- models ---------------------------------------------------------------------------


def test_register_a_gguf_file(client: TestClient, gguf: Path) -> None:
    response = client.post(f"{API}/models", json={"name": MODEL, "path": str(gguf),
                                                  "threads": 4})
    assert response.status_code == 201, response.text
    body = response.json()
    assert body == {"name": MODEL, "sha256": hashlib.sha256(gguf.read_bytes()).hexdigest(),
                    "size": gguf.stat().st_size, "chat_template": False}
    listed = client.get(f"{API}/models").json()
    assert [(m["name"], m["sha256"], m["threads"]) for m in listed] == [
        (MODEL, body["sha256"], 4)]


def test_missing_model_file_is_refused(client: TestClient, tmp_path: Path) -> None:
    missing = tmp_path / "absent.gguf"
    response = client.post(f"{API}/models", json={"name": MODEL, "path": str(missing)})
    assert response.status_code == 422
    assert "path" in response.json()["detail"] and "absent.gguf" in response.json()["detail"]
    assert client.get(f"{API}/models").json() == []


def test_non_gguf_file_is_refused(client: TestClient, tmp_path: Path) -> None:
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"PK\x03\x04 this is a zip file")
    response = client.post(f"{API}/models", json={"name": MODEL, "path": str(fake)})
    assert response.status_code == 422
    assert "not a GGUF file" in response.json()["detail"]
    assert client.get(f"{API}/models").json() == []


def test_model_body_with_an_extra_field_is_refused(client: TestClient, gguf: Path) -> None:
    response = client.post(f"{API}/models", json={"name": MODEL, "path": str(gguf),
                                                  "quant": "q4"})
    assert response.status_code == 422
    assert any(err["loc"][-1] == "quant" for err in response.json()["detail"])
    assert client.get(f"{API}/models").json() == []


def test_a_gguf_with_unreadable_metadata_is_refused(client: TestClient,
                                                    tmp_path: Path) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + bytes(range(256)) * 4)
    response = client.post(f"{API}/models", json={"name": "broken", "path": str(broken)})
    assert response.status_code == 422
    assert "cannot read the GGUF metadata" in response.json()["detail"]
    assert client.get(f"{API}/models").json() == []


def test_same_name_for_another_file_is_refused(client: TestClient, registered: str,
                                               tmp_path: Path) -> None:
    other = write_tiny_gguf(tmp_path / "other.gguf", seed=1)
    response = client.post(f"{API}/models", json={"name": registered, "path": str(other)})
    assert response.status_code == 422
    assert "new name" in response.json()["detail"]
    assert len(client.get(f"{API}/models").json()) == 1


# --- jobs -----------------------------------------------------------------------------


@pytest.mark.parametrize("body", [[1, 2], "name: x", 7])
def test_job_body_that_is_not_an_object_is_refused(client: TestClient, body: Any) -> None:
    response = client.post(f"{API}/jobs", json=body)
    assert response.status_code == 422
    assert "job spec object" in response.json()["detail"]
    assert client.get(f"{API}/jobs").json() == []


def test_invalid_job_spec_is_refused(client: TestClient, registered: str) -> None:
    response = client.post(f"{API}/jobs", json=job_body(repeats=0))
    assert response.status_code == 422
    assert response.json()["error"] == "JobSpecError"
    assert "repeats:" in response.json()["detail"]
    assert client.get(f"{API}/jobs").json() == []


def test_job_with_an_unknown_model_is_refused(client: TestClient, registered: str) -> None:
    response = client.post(f"{API}/jobs", json=job_body(models=["tiny2"]))
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert "unknown model 'tiny2'" in detail and f"registered: {MODEL}" in detail
    assert client.get(f"{API}/jobs").json() == []


def test_valid_job_is_created_and_readable(client: TestClient, registered: str) -> None:
    response = client.post(f"{API}/jobs", json=job_body(repeats=2))
    assert response.status_code == 201, response.text
    job = response.json()
    assert (job["name"], job["state"], job["total"]) == ("api-job", "running", 6)
    assert (job["pending"], job["done"], job["failed"], job["leased"]) == (6, 0, 0, 0)

    listed = client.get(f"{API}/jobs").json()
    assert [j["id"] for j in listed] == [job["id"]]

    detail = client.get(f"{API}/jobs/{job['id']}")
    assert detail.status_code == 200
    assert detail.json()["total"] == 6

    results = client.get(f"{API}/jobs/{job['id']}/results")
    assert results.status_code == 200
    summary = results.json()["summary"]
    assert [(r["model"], r["task"], r["items"], r["done"], r["metrics"]) for r in summary] == [
        (MODEL, "classification", 6, 0, {})]
    items = results.json()["records"]
    assert len(items) == 6
    assert {i["repeat"] for i in items} == {0, 1}
    assert all(i["status"] == "pending" and i["model"] == MODEL for i in items)
    assert all(i["reference"]["label"] in i["reference"]["labels"] for i in items)


@pytest.mark.parametrize("path", ["/jobs/999", "/jobs/999/results", "/jobs/999/report"])
def test_unknown_job_is_404(client: TestClient, path: str) -> None:
    response = client.get(f"{API}{path}")
    assert response.status_code == 404
    assert "999" in response.json()["detail"]


def test_status_page_lists_jobs_by_name(client: TestClient, registered: str) -> None:
    empty = client.get("/")
    assert empty.status_code == 200 and "text/html" in empty.headers["content-type"]
    assert "No job yet" in empty.text

    assert client.post(f"{API}/jobs", json=job_body(name="nightly <pi5>")).status_code == 201
    page = client.get("/").text
    assert "nightly &lt;pi5&gt;" in page
    assert "nightly <pi5>" not in page
    assert "No job yet" not in page
