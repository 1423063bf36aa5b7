"""A fleet whose agents run their llama.cpp workers as containers on the real engine.

A coordinator and two agents (`--runtime docker`) are real processes; the workers are
containers of the locally built worker image. The tests run a job through them, kill a
worker container mid-job, change a model's desired spec, restart an agent, remove the
model, and check that the agents reconcile the containers each time.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from coordinator.client import Client
from coordinator.demo import LocalFleet, joined, wait_for, workers_ready
from node_agent.docker_runtime import LABEL_SPEC
from tests.integration.docker_support import WORKER_IMAGE, engine, remove_all, wait_until, workers

pytestmark = pytest.mark.integration

TOKEN = "docker-token"
MODEL = "tiny-docker"
AGENTS = ("it-docker-1", "it-docker-2")
DOCKER_ARGS = ("--runtime", "docker", "--worker-image", WORKER_IMAGE)


@pytest.fixture(scope="module")
def engine_client() -> Iterator[docker.DockerClient]:
    client = engine()
    remove_all(client, agent_prefix="it-docker")
    yield client
    remove_all(client, agent_prefix="it-docker")


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path,
          engine_client: docker.DockerClient) -> Iterator[LocalFleet]:
    with LocalFleet(data_dir=tmp_path_factory.mktemp("docker-fleet"), nodes=0, token=TOKEN,
                    agent_args=DOCKER_ARGS) as fleet:
        for name in AGENTS:
            fleet.spawn_agent(name)
        client = joined(fleet, agents=2)
        client.add_model(name=MODEL, path=str(tiny_model), threads=1, n_ctx=1024,
                         memory_mb=1024)
        wait_for("both worker containers to be ready",
                 lambda: workers_ready(client, MODEL, 2) >= 2, fleet=fleet, timeout_s=180)
        yield fleet


def running_ids(engine_client: docker.DockerClient, agent: str) -> set[str]:
    return {str(c.id) for c in workers(engine_client, agent=agent, model=MODEL, running=True)}


def job_spec(limit: int, repeats: int = 1) -> dict[str, Any]:
    return {"name": "docker-job", "models": [MODEL], "repeats": repeats,
            "params": {"max_tokens": 8, "temperature": 0.0, "seed": 1, "n_ctx": 1024},
            "tasks": [{"task": "classification", "dataset": "builtin:classification",
                       "limit": limit}]}


def finished(client: Client, job_id: int) -> dict[str, Any]:
    job = client.job(job_id)
    return job if job["state"] != "running" else {}


def test_a_job_runs_through_worker_containers(fleet: LocalFleet, client: Client,
                                              engine_client: docker.DockerClient) -> None:
    nodes = {n["name"]: n for n in client.nodes()}
    assert {nodes[a]["runtime"] for a in AGENTS} == {"docker"}
    for agent in AGENTS:
        (container,) = workers(engine_client, agent=agent, model=MODEL, running=True)
        assert container.image.tags and WORKER_IMAGE in container.image.tags
        assert container.attrs["HostConfig"]["Memory"] == 1024 * 2**20

    job = client.submit(job_spec(limit=6))
    wait_for("the job to finish", lambda: bool(finished(client, job["id"])), fleet=fleet,
             timeout_s=180)
    result = client.job(job["id"])
    assert (result["state"], result["done"], result["failed"]) == ("finished", 6, 0)
    rows = client.results(job["id"])["items"]
    assert all(r["e2e_s"] > 0 and r["completion_tokens"] >= 1 for r in rows)
    assert {r["node"] for r in rows} <= set(AGENTS)


def test_a_killed_worker_container_is_restarted_and_its_items_finished(
        fleet: LocalFleet, client: Client, engine_client: docker.DockerClient) -> None:
    victim = AGENTS[0]
    (before,) = running_ids(engine_client, victim)
    job = client.submit(job_spec(limit=20, repeats=3))
    wait_for("the job to get going", lambda: client.job(job["id"])["done"] >= 2, fleet=fleet,
             timeout_s=120)
    engine_client.containers.get(before).kill()
    assert client.job(job["id"])["pending"] > 0, "the worker was killed mid-job"

    wait_for("the job to finish", lambda: bool(finished(client, job["id"])), fleet=fleet,
             timeout_s=300)
    result = client.job(job["id"])
    assert (result["state"], result["done"], result["failed"]) == ("finished", 60, 0)
    wait_until("a new worker container for the killed one",
               lambda: len(running_ids(engine_client, victim) - {before}) == 1, timeout_s=120)
    assert before not in {str(c.id) for c in workers(engine_client, agent=victim)}, \
        "the dead container is removed, not left behind"
    wait_for("the restarted worker to be ready",
             lambda: workers_ready(client, MODEL, 2) >= 2, fleet=fleet, timeout_s=120)


def test_a_changed_spec_replaces_the_containers(fleet: LocalFleet, client: Client,
                                                engine_client: docker.DockerClient) -> None:
    old = {a: running_ids(engine_client, a) for a in AGENTS}
    client.update_model(MODEL, threads=2, cpus=1.0)

    def replaced() -> bool:
        for agent in AGENTS:
            now = workers(engine_client, agent=agent, model=MODEL, running=True)
            if len(now) != 1 or str(now[0].id) in old[agent]:
                return False
            host = now[0].attrs["HostConfig"]
            if host["NanoCpus"] != 1_000_000_000 or "--threads" not in now[0].attrs["Args"]:
                return False
            args = now[0].attrs["Args"]
            if args[args.index("--threads") + 1] != "2":
                return False
        return True

    wait_until("both containers to be replaced with the new spec", replaced, timeout_s=180)
    specs = {c.labels[LABEL_SPEC] for a in AGENTS
             for c in workers(engine_client, agent=a, model=MODEL)}
    assert len(specs) == 1, "old containers are gone; both agents run the same new spec"
    wait_for("the new workers to be ready", lambda: workers_ready(client, MODEL, 2) >= 2,
             fleet=fleet, timeout_s=120)


def test_a_restarted_agent_removes_the_containers_it_left_behind(
        fleet: LocalFleet, client: Client, engine_client: docker.DockerClient) -> None:
    agent = AGENTS[1]
    (orphan,) = running_ids(engine_client, agent)
    process = next(p for p in fleet.processes
                   if p.poll() is None and agent in p.args)  # type: ignore[operator]
    os.killpg(process.pid, signal.SIGKILL)  # no chance to clean up: the container stays
    process.wait(timeout=10)
    fleet.processes.remove(process)
    assert orphan in running_ids(engine_client, agent)

    fleet.spawn_agent(agent)
    wait_until("the orphaned container to be removed and a new one started",
               lambda: (ids := running_ids(engine_client, agent)) and orphan not in ids
               and len(ids) == 1, timeout_s=180)
    wait_for("the new worker to be ready", lambda: workers_ready(client, MODEL, 2) >= 2,
             fleet=fleet, timeout_s=120)


def test_node_errors_name_a_missing_engine_and_a_missing_image(fleet: LocalFleet,
                                                               client: Client) -> None:
    fleet.spawn_agent("it-docker-no-engine", "--runtime", "docker", "--docker-url",
                      "unix:///nonexistent/docker.sock")
    fleet.spawn_agent("it-docker-no-image", "--runtime", "docker", "--worker-image",
                      "slmfleet-worker:no-such-tag")

    def errors(name: str) -> str:
        return " ".join(e for n in client.nodes() if n["name"] == name for e in n["errors"])

    wait_for("the missing engine to be reported",
             lambda: "no Docker engine answers at unix:///nonexistent" in errors(
                 "it-docker-no-engine"), fleet=fleet, timeout_s=60)
    wait_for("the missing image to be reported",
             lambda: "slmfleet-worker:no-such-tag is not on this node's Docker engine" in
             errors("it-docker-no-image"), fleet=fleet, timeout_s=60)


def test_a_removed_model_has_its_containers_removed(fleet: LocalFleet, client: Client,
                                                    engine_client: docker.DockerClient) -> None:
    assert all(running_ids(engine_client, a) for a in AGENTS)
    client.remove_model(MODEL)
    wait_until("every container of the removed model to be gone",
               lambda: not workers(engine_client, model=MODEL), timeout_s=120)
    assert client.models() == []
