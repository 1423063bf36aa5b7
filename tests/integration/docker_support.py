"""The real Docker engine and the locally built worker image, for integration tests.

Locally, a missing engine or image skips with the command that provides it; in CI
(`CI` set) it fails, since `make test` installs and starts the engine and builds the
images first.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import docker
import docker.errors
import requests
from docker.models.containers import Container

from node_agent.docker_runtime import DEFAULT_IMAGE, LABEL_AGENT, LABEL_MANAGED, LABEL_MODEL
from tests.support.requirements import missing

WORKER_IMAGE = os.environ.get("SLMFLEET_TEST_WORKER_IMAGE", DEFAULT_IMAGE)


def engine() -> docker.DockerClient:
    """A client of the local engine, with the worker image present."""
    try:
        client = docker.from_env(timeout=30)
        client.ping()
    except (docker.errors.DockerException, requests.RequestException) as exc:
        missing(f"no Docker engine answers ({exc}); `make docker-engine` installs and "
                "starts one")
        raise
    try:
        client.images.get(WORKER_IMAGE)
    except docker.errors.ImageNotFound:
        missing(f"the worker image {WORKER_IMAGE} is not built; run `make images`")
        raise
    return client


def workers(client: docker.DockerClient, *, agent: str | None = None,
            model: str | None = None, running: bool = False) -> list[Container]:
    """slmfleet worker containers, optionally of one agent and/or model."""
    labels = [f"{LABEL_MANAGED}=true"]
    if agent is not None:
        labels.append(f"{LABEL_AGENT}={agent}")
    if model is not None:
        labels.append(f"{LABEL_MODEL}={model}")
    found = client.containers.list(all=True, filters={"label": labels})
    return [c for c in found if not running or c.status == "running"]


def remove_all(client: docker.DockerClient, *, agent_prefix: str) -> None:
    """Remove the worker containers of agents whose names start with `agent_prefix`."""
    for container in workers(client):
        if container.labels.get(LABEL_AGENT, "").startswith(agent_prefix):
            container.remove(force=True)


def wait_until(what: str, check: Callable[[], bool], *, timeout_s: float,
               on_timeout: Callable[[], str] = lambda: "") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what} "
                         f"{on_timeout()}")
