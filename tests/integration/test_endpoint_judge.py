"""The RAG judge through a real OpenAI-compatible endpoint: llama-cpp-python's own server.

The server runs the tiny test model on loopback; the coordinator's runner calls its
/v1/completions for every judge item and records the verdicts in the store.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from coordinator import endpoint_judge
from coordinator import store as st
from coordinator.api import create_app
from coordinator.endpoint_judge import Endpoint
from coordinator.evaluation.tasks import get_task
from coordinator.jobs import submit_job, submit_judge_job
from tests.support.requirements import require_module

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def server(tiny_model: Path) -> Iterator[str]:
    require_module("sse_starlette", install_hint="run make test (the test extra)")
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(tiny_model), "--host",
         "127.0.0.1", "--port", str(port), "--n_ctx", "2048", "--model_alias", "tiny-judge"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"{url}/models", timeout=2).raise_for_status()
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.3)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=15)


@pytest.fixture
def rag_job(tmp_path: Path) -> tuple[st.Store, int]:
    """A store with a RAG job whose three items are finished (answers as given)."""
    store = st.Store(f"sqlite:///{tmp_path / 's.db'}")
    st.add_model(store, name="cand", sha256="1" * 64, size=1, path="/x", threads=1,
                 n_ctx=2048)
    job = submit_job(store, {"name": "rag", "models": ["cand"], "limit": 3,
                             "tasks": [{"task": "rag", "dataset": "builtin:rag"}]})
    rag = get_task("rag")
    while (item := st.lease_next(store, model="cand", node_id=1, lease_s=60)) is not None:
        st.complete_item(store, item_id=item.id, lease_id=item.lease_id or "", node_id=1,
                         output=item.reference["answers"][0], measurement=None, error=None,
                         scorer=lambda row, out: rag.score_item(out, row.reference))
    return store, job.id


def test_the_endpoint_judges_every_answer(server: str, rag_job: tuple[st.Store, int]) -> None:
    store, job_id = rag_job
    endpoint = Endpoint(url=server, model="tiny-judge")
    judge = submit_judge_job(store, job_id=job_id, endpoint=endpoint)
    assert endpoint_judge.run(store, endpoint) == 3
    assert st.get_job(store, job_id=judge.id).state == "finished"
    items = st.job_items(store, job_id=judge.id)
    assert {i.status for i in items} == {"done"}
    assert all(i.prompt_tokens and i.prompt_tokens > 30 for i in items)  # the server's usage
    assert all(i.completion_tokens is not None and i.completion_tokens <= 4 for i in items)
    assert all(i.score is not None and "valid" in i.score for i in items)


def test_judging_through_the_api_runs_in_the_background(
        server: str, rag_job: tuple[st.Store, int]) -> None:
    store, job_id = rag_job
    client = TestClient(create_app(store=store))
    response = client.post(f"/api/v1/jobs/{job_id}/judge",
                           json={"endpoint": {"url": server, "model": "tiny-judge"}})
    assert response.status_code == 201, response.text
    judge_id = response.json()["id"]
    deadline = time.monotonic() + 120
    while client.get(f"/api/v1/jobs/{judge_id}").json()["state"] == "running":
        assert time.monotonic() < deadline, "the endpoint judge job did not finish"
        time.sleep(0.2)
    report = client.get(f"/api/v1/jobs/{judge_id}/report").json()
    (row,) = report["summary"]
    assert row["model"] == "endpoint:tiny-judge" and row["done"] == 3
    assert 0.0 <= row["metrics"]["parse_failure_rate"]["value"] <= 1.0


def test_an_unreachable_endpoint_fails_its_items_with_the_reason(
        rag_job: tuple[st.Store, int]) -> None:
    store, job_id = rag_job
    endpoint = Endpoint(url=f"http://127.0.0.1:{_free_port()}/v1", model="gone", attempts=1)
    judge = submit_judge_job(store, job_id=job_id, endpoint=endpoint)
    assert endpoint_judge.run(store, endpoint) == 0
    items = st.job_items(store, job_id=judge.id)
    assert {i.status for i in items} == {"failed"}
    assert all("did not answer after 1 attempts" in (i.error or "") for i in items)
    assert st.get_job(store, job_id=judge.id).state == "finished"
