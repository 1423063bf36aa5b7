"""Which worker runtime an agent uses: `docker` on a Pi whose engine answers, else `process`.

`choose_runtime` is the pure decision; `docker_engine_answers` is the one probe it needs.
An explicit `--runtime docker` is kept even without an engine: the agent then reports
the missing engine to the coordinator as a node error instead of silently running
workers some other way.
"""

from __future__ import annotations

from typing import Literal

RuntimeName = Literal["process", "docker"]


def choose_runtime(requested: str, *, on_pi: bool, engine_answers: bool) -> RuntimeName:
    if requested in ("process", "docker"):
        return requested  # type: ignore[return-value]
    if requested != "auto":
        raise ValueError(f"unknown runtime '{requested}'; use auto, docker or process")
    return "docker" if on_pi and engine_answers else "process"


def docker_engine_answers(base_url: str | None = None, *, timeout_s: float = 5.0) -> bool:
    """Does a Docker engine answer a ping (at `base_url`, else DOCKER_HOST or the socket)?"""
    import docker
    import docker.errors
    import requests

    try:
        client = docker.DockerClient(base_url=base_url, timeout=int(timeout_s)) if base_url \
            else docker.from_env(timeout=int(timeout_s))
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (docker.errors.DockerException, requests.RequestException):
        return False
