"""The Docker runtime: each llama.cpp worker is a container of the worker image.

A worker container gets the model file bind-mounted read-only, a read-only root file
system with a tmpfs at /tmp, the spec's CPU and memory limits (capped by the node's own
limits, which is how one machine emulates Pi 4 and Pi 5 classes), and labels naming the
agent, the model and a hash of its spec, so an agent finds the containers it left
behind after a restart and never touches anyone else's. The worker connects back to the
agent's PAIR socket on loopback, so it shares the agent's network: the host's on a Pi,
the agent container's own when the agent itself runs in a container.

Every Docker call runs in a thread with the client's HTTP timeout and an asyncio
deadline; Docker failures become `WorkerError` (or `RuntimeUnavailable` when no worker
can run at all) with a message that says how to fix them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import docker
import docker.errors
import requests
import zmq.asyncio
from docker.models.containers import Container

from node_agent.errors import RuntimeUnavailable, WorkerError
from node_agent.protocol import WorkerSpec
from node_agent.runtime import PairWorker, bind_pair, worker_args

log = logging.getLogger("slmfleet.agent.docker")

LABEL_MANAGED = "io.slmfleet.managed"
LABEL_AGENT = "io.slmfleet.agent"
LABEL_MODEL = "io.slmfleet.model"
LABEL_SPEC = "io.slmfleet.spec"
MODEL_MOUNT = "/model/model.gguf"
DEFAULT_IMAGE = "slmfleet-worker:latest"
POLL_S = 1.0
STATS_EVERY = 3  # polls between memory samples (a stats call costs more than an inspect)

T = TypeVar("T")


@dataclass(frozen=True)
class DockerSettings:
    """How this node runs worker containers."""

    image: str = DEFAULT_IMAGE
    network: str = "auto"  # host, container:<name>, or auto (see worker_network)
    base_url: str | None = None  # None: DOCKER_HOST, else the local socket
    call_timeout_s: float = 30.0
    max_cpus: float | None = None  # the node's cap on every worker (emulates a Pi class)
    max_memory_mb: int | None = None


def worker_network(setting: str, *, own_container: str | None) -> str:
    """The network mode for workers: they must reach the agent's loopback.

    `auto` is the host network for an agent on the host, and the agent container's own
    network namespace (`container:<id>`) for an agent running in a container of the
    same engine.
    """
    if setting != "auto":
        return setting
    return f"container:{own_container}" if own_container else "host"


def own_container_candidates(*, mountinfo: str, hostname: str) -> list[str]:
    """Names this process's container may have on the engine: the id in the paths Docker
    bind-mounts into every container (/etc/hostname and friends), then the hostname,
    which Docker sets to the short id unless told otherwise."""
    ids = re.findall(r"/containers/([0-9a-f]{64})/", mountinfo)
    return list(dict.fromkeys([*ids, hostname]))


def spec_hash(spec: WorkerSpec) -> str:
    return hashlib.sha256(spec.model_dump_json().encode()).hexdigest()[:16]


def effective_limits(spec: WorkerSpec, settings: DockerSettings
                     ) -> tuple[float | None, int | None]:
    """(cpus, memory MB) for a worker: the tighter of the spec's and the node's caps."""
    def tighter(a: T | None, b: T | None) -> T | None:
        values = [v for v in (a, b) if v is not None]
        return min(values) if values else None  # type: ignore[type-var]
    return tighter(spec.cpus, settings.max_cpus), tighter(spec.memory_mb, settings.max_memory_mb)


def container_name(agent: str, model: str) -> str:
    slug = re.sub(r"[^a-zA-Z0-9_.-]+", "-", f"{agent}-{model}").strip("-.")[:80]
    return f"slmfleet-{slug}-{hashlib.sha256(str(time.time_ns()).encode()).hexdigest()[:6]}"


def container_config(spec: WorkerSpec, *, agent: str, settings: DockerSettings,
                     model_path: Path, port: int, network: str) -> dict[str, Any]:
    """Keyword arguments for `containers.create` that make the worker for `spec`."""
    cpus, memory_mb = effective_limits(spec, settings)
    config: dict[str, Any] = {
        "image": settings.image,
        "command": worker_args(spec, model_path=MODEL_MOUNT, port=port),
        "name": container_name(agent, spec.model),
        "labels": {LABEL_MANAGED: "true", LABEL_AGENT: agent, LABEL_MODEL: spec.model,
                   LABEL_SPEC: spec_hash(spec)},
        "volumes": {str(model_path): {"bind": MODEL_MOUNT, "mode": "ro"}},
        "network_mode": network,
        "read_only": True,
        "tmpfs": {"/tmp": "rw,size=16m"},
        "stdin_open": False,
        "restart_policy": {"Name": "no"},  # the agent restarts workers, with backoff
        "log_config": {"Type": "json-file", "Config": {"max-size": "1m", "max-file": "2"}},
    }
    if cpus is not None:
        config["nano_cpus"] = int(cpus * 1e9)
    if memory_mb is not None:
        config["mem_limit"] = f"{memory_mb}m"
        config["memswap_limit"] = f"{memory_mb}m"  # no swap: a Pi that swaps is not measured
    return config


def describe_exit(state: dict[str, Any], *, memory_mb: int | None) -> str:
    """One line on why a container is not serving, from its inspected `State`."""
    status = state.get("Status", "unknown")
    if status == "running":
        health = (state.get("Health") or {}).get("Status")
        return "failed its health check" if health == "unhealthy" else "is running"
    if state.get("OOMKilled"):
        limit = f"its memory limit of {memory_mb} MB" if memory_mb else "the node's memory"
        return f"was killed for running out of memory ({limit} is too small for this model)"
    code = state.get("ExitCode")
    return f"container {status} with code {code}" if code is not None else f"container {status}"


class DockerWorker(PairWorker):
    """A worker container; its state is polled in the background so `alive` is cheap."""

    def __init__(self, *, model: str, container: Container, socket: zmq.asyncio.Socket,
                 runtime: DockerRuntime, memory_mb: int | None) -> None:
        super().__init__(model=model, ref=str(container.id), socket=socket)
        self.container = container
        self._runtime = runtime
        self._memory_mb = memory_mb
        self._state: dict[str, Any] = {"Status": "created"}
        self._rss_mb = 0.0
        self._poller = asyncio.create_task(self._poll(), name=f"poll {model}")

    def alive(self) -> bool:
        health = (self._state.get("Health") or {}).get("Status")
        return self._state.get("Status") in ("created", "running") and health != "unhealthy"

    def exit_reason(self) -> str:
        reason = describe_exit(self._state, memory_mb=self._memory_mb)
        logs = self._runtime.last_logs.get(self.ref, "")
        return f"{reason}{': ' + logs if logs else ''}"

    def current_rss_mb(self) -> float:
        return self._rss_mb

    async def _poll(self) -> None:
        polls = 0
        while True:
            try:
                await self._runtime.call(self.container.reload)
                self._state = dict(self.container.attrs.get("State") or {})
                if polls % STATS_EVERY == 0 and self._state.get("Status") == "running":
                    stats = await self._runtime.call(self.container.stats, stream=False,
                                                      one_shot=True)
                    self._rss_mb = container_memory_mb(stats)
            except WorkerError as exc:
                if "404" in str(exc) or "No such container" in str(exc):
                    self._state = {"Status": "removed"}
                    return
                log.warning("cannot inspect the worker container for %s: %s", self.model, exc)
            if not self.alive():
                await self._runtime.keep_logs(self.container)
                return
            polls += 1
            await asyncio.sleep(POLL_S)

    async def refresh(self) -> None:
        """Inspect the container now (the poller does this every second)."""
        await self._runtime.call(self.container.reload)
        self._state = dict(self.container.attrs.get("State") or {})

    async def terminate(self) -> None:
        self._poller.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._poller
        await self._runtime.remove(self.ref, grace_s=5)


def container_memory_mb(stats: dict[str, Any]) -> float:
    """Resident memory of a container from one `stats` sample, as `docker stats` shows it
    (usage less the inactive page cache; cgroup v1 and v2 name that field differently)."""
    memory = stats.get("memory_stats") or {}
    usage = float(memory.get("usage") or 0)
    detail = memory.get("stats") or {}
    cache = detail.get("total_inactive_file", detail.get("inactive_file", 0))
    return max(0.0, usage - float(cache)) / 2**20


class DockerRuntime:
    """Runs workers as containers of `settings.image` on the node's Docker engine."""

    name = "docker"

    def __init__(self, *, context: zmq.asyncio.Context, agent: str, settings: DockerSettings,
                 network: str | None = None,
                 client_factory: Callable[..., docker.DockerClient] = docker.DockerClient
                 ) -> None:
        self._context = context
        self.agent = agent
        self.settings = settings
        self.network = network  # resolved from settings.network at the first check
        self._client_factory = client_factory
        self._client: docker.DockerClient | None = None
        self._mine: set[str] = set()  # containers started by this run of the agent
        self.last_logs: dict[str, str] = {}

    # --- plumbing -----------------------------------------------------------------

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a blocking Docker SDK call in a thread, under a deadline."""
        try:
            return await asyncio.wait_for(asyncio.to_thread(fn, *args, **kwargs),
                                          timeout=self.settings.call_timeout_s + 5)
        except TimeoutError:
            raise WorkerError(f"the Docker engine did not answer within "
                              f"{self.settings.call_timeout_s:.0f} s") from None
        except (docker.errors.DockerException, requests.RequestException) as exc:
            raise WorkerError(f"Docker: {exc}") from exc

    def _engine_hint(self) -> str:
        where = self.settings.base_url or "the local socket (or DOCKER_HOST)"
        return (f"no Docker engine answers at {where}; start it (`systemctl start docker`, "
                "or `dockerd` as root), give the agent access to its socket, or run the "
                "agent with --runtime process")

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            raise RuntimeUnavailable(self._engine_hint())
        return self._client

    # --- WorkerRuntime ------------------------------------------------------------

    async def check(self) -> None:
        if self._client is None:
            kwargs: dict[str, Any] = {"timeout": int(self.settings.call_timeout_s)}
            try:
                if self.settings.base_url:
                    client = await self.call(self._client_factory,
                                             base_url=self.settings.base_url, **kwargs)
                else:
                    client = await self.call(docker.from_env, **kwargs)
            except WorkerError as exc:
                raise RuntimeUnavailable(f"{self._engine_hint()} ({exc})") from None
            self._client = client
        try:
            await self.call(self.client.ping)
        except WorkerError as exc:
            raise RuntimeUnavailable(f"{self._engine_hint()} ({exc})") from None
        if self.network is None:
            self.network = worker_network(self.settings.network,
                                          own_container=await self._own_container())
            log.info("worker containers use network %s", self.network)
        try:
            await self.call(self.client.images.get, self.settings.image)
        except WorkerError as exc:
            if "404" not in str(exc) and "No such image" not in str(exc):
                raise
            raise RuntimeUnavailable(
                f"the worker image {self.settings.image} is not on this node's Docker "
                "engine; build it with `make images` (deploy/docker/build-images.sh), load "
                "it with `docker load`, or name another with --worker-image") from None

    async def _own_container(self) -> str | None:
        """The id of the container this agent runs in, if it runs in one of this engine's."""
        try:
            mountinfo = Path("/proc/self/mountinfo").read_text()
        except OSError:
            mountinfo = ""
        for candidate in own_container_candidates(mountinfo=mountinfo,
                                                  hostname=socket.gethostname()):
            try:
                container = await self.call(self.client.containers.get, candidate)
            except WorkerError:
                continue
            return str(container.id)
        return None

    async def start(self, spec: WorkerSpec, *, path: Path, timeout_s: float) -> DockerWorker:
        await self.check()
        assert self.network is not None  # check() resolved it
        try:
            pair, port = bind_pair(self._context)
        except zmq.ZMQError as exc:
            raise WorkerError(f"cannot start a worker for {spec.model}: {exc}") from exc
        config = container_config(spec, agent=self.agent, settings=self.settings,
                                  model_path=path, port=port, network=self.network)
        try:
            container = await self.call(self.client.containers.create, **config)
        except WorkerError as exc:
            pair.close(linger=0)
            raise WorkerError(f"cannot create a worker container for {spec.model} from "
                              f"{self.settings.image}: {exc}") from None
        self._mine.add(str(container.id))
        try:
            await self.call(container.start)
        except WorkerError as exc:
            pair.close(linger=0)
            await self.remove(str(container.id))
            raise WorkerError(f"cannot start a worker container for {spec.model} "
                              f"(network {self.network}): {exc}") from None
        worker = DockerWorker(model=spec.model, container=container, socket=pair,
                              runtime=self, memory_mb=effective_limits(spec, self.settings)[1])
        try:
            await worker.wait_ready(timeout_s=timeout_s)
        except WorkerError as exc:
            with contextlib.suppress(WorkerError):
                await worker.refresh()
                await self.keep_logs(container)
            reason = worker.exit_reason()
            await asyncio.shield(worker.stop())
            raise WorkerError(f"worker container for {spec.model} did not become ready "
                              f"({reason}): {exc}") from None
        except BaseException:  # cancelled while loading: leave no container behind
            await asyncio.shield(worker.stop())
            raise
        log.info("worker container %s for %s ready", container.name, spec.model)
        return worker

    async def leftovers(self, *, keep: Any = ()) -> list[str]:
        found = await self.call(self.client.containers.list, all=True, filters={
            "label": [f"{LABEL_MANAGED}=true", f"{LABEL_AGENT}={self.agent}"]})
        return sorted(str(c.id) for c in found
                      if str(c.id) not in self._mine and str(c.id) not in keep)

    async def remove(self, ref: str, *, grace_s: float = 0) -> None:
        """Stop (after `grace_s`) and remove one container; gone already is fine."""
        try:
            container = await self.call(self.client.containers.get, ref)
            if grace_s > 0 and container.status == "running":
                await self.call(container.stop, timeout=int(grace_s))
            await self.call(container.remove, force=True)
        except WorkerError as exc:
            if "404" not in str(exc) and "No such container" not in str(exc):
                log.warning("cannot remove worker container %s: %s", ref[:12], exc)
        finally:
            self._mine.discard(ref)
            self.last_logs.pop(ref, None)

    async def keep_logs(self, container: Container, *, lines: int = 5) -> None:
        """Remember the last lines a dead container printed, for the error message."""
        with contextlib.suppress(WorkerError):
            raw = await self.call(container.logs, tail=lines)
            text = raw.decode(errors="replace").strip() if isinstance(raw, bytes) else ""
            if text:
                self.last_logs[str(container.id)] = " | ".join(text.splitlines()[-lines:])
