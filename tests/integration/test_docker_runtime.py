"""The Docker runtime on a real engine: real worker containers of the locally built image
serving real llama.cpp completions on the tiny GGUF."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import docker
import pytest
import zmq.asyncio

from node_agent.docker_runtime import (
    LABEL_AGENT,
    LABEL_SPEC,
    MODEL_MOUNT,
    DockerRuntime,
    DockerSettings,
    spec_hash,
)
from node_agent.errors import RuntimeUnavailable, WorkerError
from node_agent.runtime import CompletionRequest
from tests.integration.docker_support import WORKER_IMAGE, engine, remove_all, wait_until, workers
from tests.support.specs import worker_spec

pytestmark = pytest.mark.integration

AGENT = "it-runtime"
REQUEST = CompletionRequest(prompt="Message: the app crashes\nLabel:", stop=("\n",),
                            max_tokens=6, temperature=0.0, seed=7)


@pytest.fixture(scope="module")
def client() -> Iterator[docker.DockerClient]:
    client = engine()
    remove_all(client, agent_prefix="it-")
    yield client
    remove_all(client, agent_prefix="it-")


@contextlib.asynccontextmanager
async def runtime(agent: str = AGENT, **settings: object) -> AsyncIterator[DockerRuntime]:
    context = zmq.asyncio.Context()
    try:
        settings.setdefault("image", WORKER_IMAGE)
        yield DockerRuntime(context=context, agent=agent, network="host",
                            settings=DockerSettings(**settings))  # type: ignore[arg-type]
    finally:
        context.destroy(linger=0)


def test_a_worker_container_serves_completions_isolated_and_limited(
        client: docker.DockerClient, tiny_model: Path) -> None:
    spec = worker_spec("tiny", tiny_model, cpus=1.0, memory_mb=512)

    async def scenario() -> tuple[str, str, dict[str, object], float]:
        async with runtime() as docker_runtime:
            await docker_runtime.check()
            worker = await docker_runtime.start(spec, path=tiny_model, timeout_s=120)
            try:
                first = await worker.complete(REQUEST, timeout_s=60)
                again = await worker.complete(REQUEST, timeout_s=60)
                container = client.containers.get(worker.ref)
                wait_until("the container's health check to pass",
                           lambda: (container.reload() or True) and  # type: ignore[func-returns-value]
                           container.attrs["State"].get("Health", {}).get("Status") == "healthy",
                           timeout_s=60)
                await asyncio.sleep(3.5)  # the poller samples memory every 3 s
                return first.text, again.text, container.attrs, worker.rss_mb()
            finally:
                await worker.stop()
                assert not workers(client, agent=AGENT), "stop removes the container"

    first, again, attrs, rss = asyncio.run(scenario())
    assert first == again, "temperature 0 with a fixed seed is deterministic"
    host = attrs["HostConfig"]
    assert host["NanoCpus"] == 1_000_000_000 and host["Memory"] == 512 * 2**20  # type: ignore[index]
    assert host["ReadonlyRootfs"] is True  # type: ignore[index]
    assert attrs["Config"]["User"] == "slmfleet"  # type: ignore[index]
    assert attrs["Config"]["Labels"][LABEL_SPEC] == spec_hash(spec)  # type: ignore[index]
    (mount,) = attrs["Mounts"]  # type: ignore[misc]
    assert (mount["Destination"], mount["RW"]) == (MODEL_MOUNT, False)
    assert rss > 0, "the worker's memory is read from the engine's stats"


def test_a_killed_container_is_seen_dead_with_its_reason(client: docker.DockerClient,
                                                         tiny_model: Path) -> None:
    async def scenario() -> tuple[bool, str, str]:
        async with runtime() as docker_runtime:
            worker = await docker_runtime.start(worker_spec("tiny", tiny_model),
                                                path=tiny_model, timeout_s=120)
            try:
                client.containers.get(worker.ref).kill()
                for _ in range(50):
                    if not worker.alive():
                        break
                    await asyncio.sleep(0.2)
                with pytest.raises(WorkerError) as failure:
                    await worker.complete(REQUEST, timeout_s=10)
                return worker.alive(), worker.exit_reason(), str(failure.value)
            finally:
                await worker.stop()

    alive, reason, error = asyncio.run(scenario())
    assert not alive
    assert "container exited with code 137" in reason
    assert "exited with code 137" in error


def test_leftovers_are_this_agents_containers_only(client: docker.DockerClient,
                                                   tiny_model: Path) -> None:
    stranger = client.containers.run(WORKER_IMAGE, entrypoint=["sleep", "300"], detach=True,
                                     labels={"purpose": "not slmfleet"})
    try:
        async def scenario() -> tuple[str, list[str], list[str], list[str]]:
            async with runtime() as first_run:
                await first_run.check()
                worker = await first_run.start(worker_spec("tiny", tiny_model),
                                               path=tiny_model, timeout_s=120)
                assert await first_run.leftovers() == [], "its own live worker is no leftover"
            # the agent "restarts": a new runtime of the same agent, and one of another
            async with runtime() as second_run, runtime("it-other") as other_agent:
                await second_run.check()
                await other_agent.check()
                found = await second_run.leftovers()
                others = await other_agent.leftovers()
                await second_run.remove(worker.ref)
                return worker.ref, found, others, await second_run.leftovers()

        ref, found, others, after = asyncio.run(scenario())
        assert found == [ref] and others == [] and after == []
        stranger.reload()
        assert stranger.status == "running", "a container without our labels is never touched"
    finally:
        stranger.remove(force=True)


def test_unusable_engines_and_images_are_refused_with_the_fix(client: docker.DockerClient,
                                                              tiny_model: Path) -> None:
    async def check(**settings: object) -> str:
        async with runtime(**settings) as docker_runtime:
            with pytest.raises(RuntimeUnavailable) as failure:
                await docker_runtime.check()
            with pytest.raises(RuntimeUnavailable):
                await docker_runtime.start(worker_spec("tiny", tiny_model), path=tiny_model,
                                           timeout_s=30)
            return str(failure.value)

    no_engine = asyncio.run(check(base_url="unix:///nonexistent/docker.sock"))
    assert "no Docker engine answers at unix:///nonexistent/docker.sock" in no_engine
    assert "--runtime process" in no_engine
    no_image = asyncio.run(check(image="slmfleet-worker:no-such-tag"))
    assert "slmfleet-worker:no-such-tag is not on this node's Docker engine" in no_image
    assert "make images" in no_image
    assert not workers(client, agent=AGENT)


def test_a_model_that_cannot_load_fails_the_start_and_leaves_no_container(
        client: docker.DockerClient, tmp_path: Path) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\x00" * 64)
    broken.chmod(0o644)

    async def scenario() -> None:
        async with runtime() as docker_runtime:
            await docker_runtime.start(worker_spec("broken", broken), path=broken,
                                       timeout_s=60)

    with pytest.raises(WorkerError, match="cannot load model"):
        asyncio.run(scenario())
    assert not [c for c in workers(client, agent=AGENT)
                if c.labels.get(LABEL_AGENT) == AGENT]
