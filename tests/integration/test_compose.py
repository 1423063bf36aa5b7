"""docker-compose.yml on the real engine: a coordinator and three agents from the locally
built images, their workers as sibling containers capped like Pi 4 and Pi 5 nodes, and a
job submitted with `slmfleet submit` that runs to the end on them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors
import pytest

from coordinator.client import Client, ClientError
from coordinator.demo import free_port
from tests.integration.docker_support import engine, wait_until, workers
from tests.support.requirements import missing

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PROJECT = "slmfleet-it"
AGENTS = {"pi5-a": 1_000_000_000, "pi4-a": 500_000_000, "pi4-b": 500_000_000}


def compose_command() -> list[str]:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False)
    if probe.returncode == 0:
        return ["docker", "compose"]
    missing("neither `docker compose` nor `docker-compose` is installed; "
            "`make docker-engine` installs Debian's docker-compose")
    raise AssertionError("unreachable")


@pytest.fixture(scope="module")
def compose(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path
            ) -> Iterator[tuple[Client, dict[str, str]]]:
    client = engine()
    for image in ("slmfleet-agent:latest", "slmfleet-coordinator:latest"):
        try:
            client.images.get(image)
        except docker.errors.ImageNotFound:
            missing(f"the image {image} is not built; run `make images`")
    models = tmp_path_factory.mktemp("compose-models")
    shutil.copy(tiny_model, models / "tiny.gguf")
    (models / "tiny.gguf").chmod(0o644)
    models.chmod(0o755)
    env = {**os.environ, "SLMFLEET_API_PORT": str(free_port()),
           "SLMFLEET_MODELS": str(models), "SLMFLEET_TOKEN": "compose-it-token",
           "SLMFLEET_COMPOSE_DATA": str(tmp_path_factory.mktemp("compose-data"))}
    base = [*compose_command(), "-f", str(ROOT / "docker-compose.yml"), "-p", PROJECT]
    subprocess.run([*base, "down", "-v"], env=env, capture_output=True, check=False,
                   timeout=120)
    subprocess.run([*base, "up", "-d"], env=env, check=True, timeout=300)
    try:
        api = Client(f"http://127.0.0.1:{env['SLMFLEET_API_PORT']}", timeout_s=10)
        yield api, env
    finally:
        logs = subprocess.run([*base, "logs", "--tail", "30"], env=env, capture_output=True,
                              text=True, check=False, timeout=60)
        print(logs.stdout[-6000:])
        subprocess.run([*base, "down", "-v", "-t", "20"], env=env, check=False, timeout=300)
        for container in workers(client):
            if container.labels.get("io.slmfleet.agent") in AGENTS:
                container.remove(force=True)


def answers(call: object) -> bool:
    try:
        return bool(call())  # type: ignore[operator]
    except ClientError:
        return False


def test_compose_fleet_runs_a_submitted_job_on_emulated_pi_classes(
        compose: tuple[Client, dict[str, str]], tmp_path: Path) -> None:
    api, env = compose
    wait_until("the coordinator container to answer", lambda: answers(api.health),
               timeout_s=120)
    wait_until("three agents to join", lambda: answers(
        lambda: {n["name"] for n in api.nodes()} >= set(AGENTS)), timeout_s=120)
    api.add_model(name="tiny", path="/models/tiny.gguf", threads=1, n_ctx=1024)

    def ready() -> bool:
        return all(any(w["state"] in ("ready", "busy") for w in n["workers"])
                   for n in api.nodes() if n["name"] in AGENTS)

    wait_until("a worker container on every agent", lambda: answers(ready), timeout_s=240,
               on_timeout=lambda: str(api.nodes()))
    engine_client = engine()
    for agent, nano_cpus in AGENTS.items():
        (container,) = workers(engine_client, agent=agent, model="tiny", running=True)
        assert container.attrs["HostConfig"]["NanoCpus"] == nano_cpus
        assert container.attrs["HostConfig"]["NetworkMode"].startswith("container:")

    job_file = tmp_path / "job.yaml"
    # enough items to outlast an idle agent's 0.5 s wait before it asks for work again
    job_file.write_text("name: compose-it\nmodels: [tiny]\nrepeats: 4\nparams: {n_ctx: 1024, "
                        "max_tokens: 8}\ntasks:\n  - {task: classification, "
                        "dataset: builtin:classification, limit: 12}\n")
    submitted = subprocess.run(
        [sys.executable, "-m", "coordinator.cli", "submit", str(job_file)],
        env={**env, "SLMFLEET_API": f"http://127.0.0.1:{env['SLMFLEET_API_PORT']}"},
        capture_output=True, text=True, check=True, timeout=60)
    assert submitted.stdout.startswith("job "), submitted.stdout
    job_id = int(submitted.stdout.split()[1])
    deadline = time.monotonic() + 300
    while api.job(job_id)["state"] == "running" and time.monotonic() < deadline:
        time.sleep(1)
    job = api.job(job_id)
    assert (job["state"], job["done"], job["failed"]) == ("finished", 48, 0), job
    nodes = {row["node"] for row in api.results(job_id)["items"]}
    assert nodes <= set(AGENTS) and len(nodes) >= 2, "the job is sharded over the agents"
