"""The node agent: joins the coordinator, keeps its workers as desired, and runs leased work.

One asyncio process per node. A session registers over a ZeroMQ DEALER socket, then
exchanges heartbeats both ways; when the coordinator falls silent for
`liveness × interval` the session ends, and the agent reconnects with capped backoff
and registers again. Workers, the model store and the reconcile loop outlive sessions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket as pysocket
import time
import uuid
from collections import deque
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq
import zmq.asyncio

from node_agent import curve, hardware
from node_agent.docker_runtime import DockerRuntime, DockerSettings
from node_agent.download import Arrival
from node_agent.errors import (
    AgentError,
    ModelStoreError,
    ProtocolError,
    RuntimeUnavailable,
    WorkerError,
    WorkerLost,
)
from node_agent.fetcher import ModelFetcher
from node_agent.liveness import backoff_delay, peer_alive
from node_agent.model_store import ModelStore
from node_agent.protocol import (
    PROTOCOL_VERSION,
    RELAY,
    Bye,
    CancelLease,
    Chunk,
    ChunkUnavailable,
    DesiredWorkers,
    ErrorReply,
    Heartbeat,
    LeasesHeld,
    Measurement,
    Metrics,
    NoWork,
    Register,
    Rejected,
    Topology,
    Welcome,
    WorkerSpec,
    WorkerStatus,
    WorkLease,
    WorkRequest,
    WorkResult,
    _Msg,
    decode,
    encode,
)
from node_agent.reconcile import Download, ObservedWorker, Remove, Start, Stop, plan
from node_agent.relay import HUB, RelayServer, Upstream, choose_upstream
from node_agent.runtime import CompletionRequest, ProcessRuntime, WorkerHandle, WorkerRuntime

log = logging.getLogger("slmfleet.agent")

RUNTIME_RECHECK_S = 10.0  # how often an unavailable runtime (no engine, no image) is retried
LEFTOVER_SCAN_S = 30.0
DEAD_FOR_S = 30.0  # a relay found dead is avoided this long, then tried again
RESEND_S = 60.0  # results sent this recently are sent again on a new session or route


class RegistrationRefused(AgentError):
    """The coordinator refused this agent (wrong token or protocol); retrying will not help."""


@dataclass
class AgentConfig:
    coordinator: str
    token: str
    cache_dir: Path
    name: str = field(default_factory=pysocket.gethostname)
    threads: int = 2
    heartbeat_interval_s: float = 1.0
    liveness: int = 3
    metrics_interval_s: float = 2.0
    worker_start_timeout_s: float = 300.0
    request_timeout_s: float = 600.0
    coordinator_key: bytes = b""  # the hub's CURVE public key (Z85)
    relay_bind: str | None = None  # HOST:PORT to relay on for overlay children
    relay_address: str | None = None  # HOST:PORT children reach it at
    runtime: str = "process"  # or docker
    cache_limit_mb: int | None = None  # model cache size; LRU eviction beyond it
    docker: DockerSettings = field(default_factory=DockerSettings)


@dataclass
class _Worker:
    spec: WorkerSpec
    state: str = "starting"
    handle: WorkerHandle | None = None
    task: asyncio.Task[None] | None = None
    detail: str = ""
    lease: str | None = None  # the lease its worker is serving now
    cancelled: str | None = None  # a lease the coordinator cancelled (a backup race lost)


class Agent:
    """One node of the fleet."""

    def __init__(self, config: AgentConfig, *, runtime: WorkerRuntime | None = None) -> None:
        self.config = config
        self._context = zmq.asyncio.Context()
        self._runtime = runtime or self._make_runtime()
        self.store = ModelStore(config.cache_dir / "models",
                                limit_bytes=config.cache_limit_mb * 2**20
                                if config.cache_limit_mb else None)
        self._socket: zmq.asyncio.Socket | None = None
        self._connected = asyncio.Event()
        self._last_seen = 0.0
        self._interval = config.heartbeat_interval_s
        self._liveness = config.liveness
        self.node_id: int | None = None
        self._desired: dict[str, WorkerSpec] = {}
        self._workers: dict[str, _Worker] = {}
        self._downloads: dict[str, asyncio.Task[None]] = {}
        self._replies: dict[str, asyncio.Queue[WorkLease | NoWork]] = {}
        self._backoff_until: dict[str, float] = {}
        self._failures: dict[str, int] = {}
        self._node_errors: dict[str, str] = {}  # source -> one line for the coordinator
        self._runtime_ready = False
        self._runtime_checked = -RUNTIME_RECHECK_S
        self._leftovers_scanned = -LEFTOVER_SCAN_S
        self._wake = asyncio.Event()
        self._main: asyncio.Task[Any] | None = None
        self._crashed: BaseException | None = None
        self._facts = hardware.hardware_facts(model_dir=config.cache_dir)
        self._keys = curve.load_or_create(config.cache_dir, "agent")
        self._topology: Topology | None = None
        self._via: Upstream = HUB
        self._dead: dict[int, float] = {}  # overlay positions found dead, until when
        self._relay: RelayServer | None = None
        self._fetcher = ModelFetcher(
            store=self.store, context=self._context, keys=self._keys,
            send_session=self._send, topology=lambda: self._topology,
            dead=self._dead_relays, wait_s=config.heartbeat_interval_s * config.liveness * 2)
        self._sent_results: deque[tuple[float, WorkResult]] = deque(maxlen=256)

    def _make_runtime(self) -> WorkerRuntime:
        if self.config.runtime == "docker":
            return DockerRuntime(context=self._context, agent=self.config.name,
                                 settings=self.config.docker)
        return ProcessRuntime(context=self._context, run_dir=self.config.cache_dir / "run")

    @property
    def node_errors(self) -> tuple[str, ...]:
        return tuple(self._node_errors.values())

    # --- lifecycle ------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None], *, name: str) -> asyncio.Task[None]:
        """Start a task of this agent; if it dies of an unexpected error, the agent stops.

        A background loop that died silently would leave the node looking healthy while
        it does nothing; failing loudly lets the supervisor (systemd, the demo) see it.
        """
        task = asyncio.create_task(coro, name=name)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        error = task.exception()
        log.critical("agent task %s failed; stopping the agent", task.get_name(),
                     exc_info=error)
        self._crashed = error
        if self._main is not None:
            self._main.cancel()

    async def run(self) -> None:
        """Run until cancelled or refused; reconnects with backoff when the link dies.

        Raises `AgentError` if one of the agent's own tasks failed unexpectedly.
        """
        self._main = asyncio.current_task()
        background = [self._spawn(self._reconcile_loop(), name="reconcile"),
                      self._spawn(self._metrics_loop(), name="metrics")]
        if self.config.relay_bind:
            self._relay = RelayServer(context=self._context, keys=self._keys,
                                      bind=self.config.relay_bind, chunks=self._fetcher.server)
            background.append(self._spawn(self._relay.run(self._send_up), name="relay"))
        attempt = 0
        try:
            while True:
                welcomed = await self._session()
                attempt = 0 if welcomed else attempt + 1
                delay = backoff_delay(attempt)
                log.warning("lost the coordinator; reconnecting in %.1f s", delay)
                await asyncio.sleep(delay)
        finally:
            for task in background:
                task.cancel()
            for worker in list(self._workers.values()):
                await self._stop_worker(worker)
            if self._relay is not None:
                self._relay.close()
            self._fetcher.close()
            self._context.destroy(linger=0)
            if self._crashed is not None:
                raise AgentError(f"agent stopped after an internal error: "
                                 f"{self._crashed!r}") from self._crashed

    def _dead_relays(self) -> frozenset[int]:
        now = time.monotonic()
        return frozenset(p for p, until in self._dead.items() if until > now)

    def _uplink(self, routing_id: bytes) -> zmq.asyncio.Socket:
        """A DEALER to the next hop toward the coordinator (the hub, or a relay)."""
        self._via = choose_upstream(self._topology, down=self._dead_relays())
        sock = self._context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.ROUTING_ID, routing_id)
        if self._via.endpoint is None:
            self._keys.apply_client(sock, server_key=self.config.coordinator_key)
            sock.connect(f"tcp://{self.config.coordinator}")
        else:
            assert self._via.public_key is not None
            self._keys.apply_client(sock, server_key=self._via.public_key)
            sock.connect(f"tcp://{self._via.endpoint}")
        self._socket = sock
        return sock

    async def _reroute(self, sock: zmq.asyncio.Socket, routing_id: bytes, *, why: str
                       ) -> zmq.asyncio.Socket:
        """Move this session to the current best route; the hub learns the new path from
        the heartbeat sent at once (the session and its leases carry on)."""
        before = self._via.position
        sock.close(linger=0)
        sock = self._uplink(routing_id)
        log.info("%s: now via %s (was %s)", why, self._via.position or "the hub",
                 before or "the hub")
        self._last_seen = time.monotonic()
        # results sent lately may have died with the old route: send them again (the hub
        # records each once and discards repeats), and say which leases are still held
        held = tuple(lease for w in self._workers.values() if (lease := w.lease) is not None)
        with contextlib.suppress(zmq.ZMQError):
            await sock.send_multipart(encode(Heartbeat(seq=0)), flags=zmq.NOBLOCK)
            for result in self._recent_results():
                await sock.send_multipart(encode(result), flags=zmq.NOBLOCK)
            await sock.send_multipart(encode(LeasesHeld(lease_ids=held)), flags=zmq.NOBLOCK)
        self._fetcher.session_changed()  # chunk requests may have died there too
        return sock

    def _recent_results(self) -> list[WorkResult]:
        """Results sent lately: they may have died with a route or with the coordinator."""
        horizon = time.monotonic() - RESEND_S
        return [result for sent, result in self._sent_results if sent >= horizon]

    def _held_leases(self) -> tuple[str, ...]:
        """Leases this node works on, or sent a result for lately (sent again once
        registered): what a new session, or a restarted coordinator, should keep."""
        working = [lease for w in self._workers.values() if (lease := w.lease) is not None]
        return tuple(dict.fromkeys(working + [r.lease_id for r in self._recent_results()]))

    async def _session(self) -> bool:
        routing_id = uuid.uuid4().bytes
        sock = self._uplink(routing_id)
        welcomed = False
        await sock.send_multipart(encode(Register(
            protocol=PROTOCOL_VERSION, token=self.config.token, name=self.config.name,
            facts=self._facts, runtime=self._runtime.name,  # type: ignore[arg-type]
            relay=self.config.relay_address, leases=self._held_leases())))
        self._last_seen = time.monotonic()
        heartbeat = self._spawn(self._heartbeat_loop(), name="heartbeat")
        try:
            while True:
                if not peer_alive(last_seen=self._last_seen, now=time.monotonic(),
                                  interval_s=self._interval, liveness=self._liveness * 2
                                  if not welcomed else self._liveness):
                    if self._via == HUB:
                        return welcomed
                    # the relay, or the path beyond it, is dead: go around it
                    self._dead[self._via.position] = time.monotonic() + DEAD_FOR_S
                    sock = await self._reroute(sock, routing_id, why=f"relay {self._via.position} "
                                               "fell silent")
                    continue
                if not await sock.poll(timeout=int(self._interval * 1000)):
                    continue
                frames = await sock.recv_multipart()
                self._last_seen = time.monotonic()
                if frames[0] == RELAY:  # for one of this node's overlay children
                    if self._relay is not None and len(frames) >= 3:
                        await self._relay.send_down(frames[1:])
                    continue
                try:
                    message, data = decode(frames)
                except ProtocolError as exc:
                    log.warning("dropped a bad message from the coordinator: %s", exc)
                    continue
                match message:
                    case Topology():
                        self._topology = message
                        if self._relay is not None:
                            self._relay.admit(message)
                        self._fetcher.topology_changed()  # stripe sources may move
                        if choose_upstream(message, down=self._dead_relays()) != self._via:
                            sock = await self._reroute(sock, routing_id,
                                                       why="the overlay changed")
                    case Welcome():
                        welcomed = True
                        self.node_id = message.node_id
                        self._interval = message.heartbeat_interval_s
                        self._liveness = message.liveness
                        self._connected.set()
                        self._fetcher.session_changed()  # requests of an old session
                        log.info("registered as node %d", message.node_id)
                        for result in self._recent_results():  # the hub records each once
                            await self._send(result, wait=False)
                    case Rejected(reregister=False):
                        raise RegistrationRefused(f"the coordinator refused this agent: "
                                                  f"{message.reason}")
                    case Rejected():
                        log.info("coordinator asks to register again: %s", message.reason)
                        return welcomed
                    case _:
                        self._dispatch(message, data)
            return welcomed
        except asyncio.CancelledError:
            if welcomed:  # stopping on purpose: the last message says so (flushed by linger)
                with contextlib.suppress(zmq.ZMQError):
                    await sock.send_multipart(encode(Bye()), flags=zmq.NOBLOCK)
            raise
        finally:
            self._connected.clear()
            heartbeat.cancel()
            for queue in self._replies.values():
                _drain(queue)
            sock.close(linger=500)
            self._socket = None

    async def _send_up(self, frames: list[bytes]) -> None:
        """Pass a child's frames toward the coordinator (dropped while this node has no
        route: the child then finds another)."""
        sock = self._socket
        if sock is not None:
            with contextlib.suppress(zmq.ZMQError):
                await sock.send_multipart(frames, flags=zmq.NOBLOCK)

    def _dispatch(self, message: _Msg, data: bytes | None) -> None:
        match message:
            case Heartbeat():
                pass
            case DesiredWorkers():
                self._desired = {w.model: w for w in message.workers}
                self._fetcher.want(message.workers)
                self._wake.set()
            case Chunk() | ChunkUnavailable():
                self._fetcher.arrived(Arrival(source=HUB, message=message, data=data))
            case WorkLease() | NoWork():
                self._replies.setdefault(message.model, asyncio.Queue()).put_nowait(message)
            case CancelLease():
                self._cancel_lease(message.lease_id)
            case ErrorReply():
                log.warning("coordinator error %s: %s", message.code, message.message)
            case _:
                log.warning("ignored unexpected %s message", type(message).__name__)

    def _cancel_lease(self, lease_id: str) -> None:
        """Another node's copy of this lease's item won: stop generating it."""
        for worker in self._workers.values():
            if worker.lease == lease_id and worker.handle is not None:
                worker.cancelled = lease_id
                self._spawn(worker.handle.cancel(), name=f"cancel {lease_id[:8]}")
                log.info("lease %s cancelled: another node finished its item first",
                         lease_id[:8])

    async def _send(self, message: _Msg, *, wait: bool = True) -> bool:
        if wait:
            await self._connected.wait()
        sock = self._socket
        if sock is None:
            return False
        try:  # never wait on a link: a relay that refused the handshake takes nothing
            await sock.send_multipart(encode(message), flags=zmq.NOBLOCK)
        except zmq.Again:  # as if lost on the wire; every sender copes with that
            return False
        return True

    async def _heartbeat_loop(self) -> None:
        seq = 0
        while True:
            await asyncio.sleep(self._interval)
            if self._connected.is_set():
                await self._send(Heartbeat(seq=seq), wait=False)
                seq += 1

    async def _metrics_loop(self) -> None:
        while True:
            await self._send(Metrics(
                metrics=hardware.node_metrics(model_dir=self.config.cache_dir),
                workers=self.worker_statuses(), errors=self.node_errors))
            await asyncio.sleep(self.config.metrics_interval_s)

    def worker_statuses(self) -> tuple[WorkerStatus, ...]:
        statuses = [WorkerStatus(model=m, state="downloading",
                                 downloaded=self._fetcher.progress.get(s.sha256, 0))
                    for m, s in self._desired.items()
                    if s.sha256 in self._downloads and m not in self._workers]
        for model, worker in self._workers.items():
            rss = worker.handle.rss_mb() if worker.handle else 0.0
            statuses.append(WorkerStatus(model=model, state=worker.state,  # type: ignore[arg-type]
                                         rss_mb=rss, detail=worker.detail[:500]))
        return tuple(statuses)

    # --- reconcile --------------------------------------------------------------------

    async def _check_runtime(self, now: float) -> tuple[str, ...]:
        """Is the runtime able to run workers (re-checked while it is not)? Returns the
        refs of workers left behind by an earlier run of this agent, scanned now and then.
        """
        if not self._runtime_ready and now - self._runtime_checked >= RUNTIME_RECHECK_S:
            self._runtime_checked = now
            try:
                await self._runtime.check()
            except WorkerError as exc:  # incl. RuntimeUnavailable
                if self._node_errors.get("runtime") != str(exc):
                    log.error("%s runtime unavailable: %s", self._runtime.name, exc)
                self._node_errors["runtime"] = str(exc)
            else:
                self._runtime_ready = True
                self._node_errors.pop("runtime", None)
                self._leftovers_scanned = -LEFTOVER_SCAN_S
        if not self._runtime_ready or now - self._leftovers_scanned < LEFTOVER_SCAN_S:
            return ()
        self._leftovers_scanned = now
        try:
            return tuple(await self._runtime.leftovers(
                keep={w.handle.ref for w in self._workers.values() if w.handle}))
        except WorkerError as exc:
            log.warning("cannot list this agent's leftover workers: %s", exc)
            return ()

    async def _reconcile_loop(self) -> None:
        while True:
            now = time.monotonic()
            leftovers = await self._check_runtime(now)
            observed = {m: ObservedWorker(spec=w.spec, state=w.state,  # type: ignore[arg-type]
                                          alive=w.handle.alive() if w.handle else
                                          w.state == "starting")
                        for m, w in self._workers.items()}
            stored = frozenset(s.sha256 for s in self._desired.values()
                               if self.store.has(s.sha256))
            actions = plan(desired=self._desired, observed=observed, stored=stored,
                           downloading=frozenset(self._downloads),
                           backing_off=frozenset(m for m, t in self._backoff_until.items()
                                                 if t > now),
                           leftovers=leftovers, runtime_ready=self._runtime_ready)
            for action in actions:
                match action:
                    case Remove(ref):
                        log.warning("removing worker %s left by an earlier run of this agent",
                                    ref[:12])
                        with contextlib.suppress(WorkerError):
                            await self._runtime.remove(ref)
                    case Stop(model, reason):
                        worker = self._workers.pop(model)
                        if reason == "crashed" and worker.handle is not None:
                            self._fail(model, f"worker for {model} "
                                              f"{worker.handle.exit_reason()}")
                        await self._stop_worker(worker)
                    case Download(spec):
                        self._downloads[spec.sha256] = self._spawn(
                            self._download(spec), name=f"download {spec.model}")
                    case Start(spec):
                        worker = _Worker(spec=spec)
                        self._workers[spec.model] = worker
                        worker.task = self._spawn(self._run_worker(worker),
                                                  name=f"worker {spec.model}")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=1.0)

    def _fail(self, model: str, reason: str) -> None:
        count = self._failures.get(model, 0)
        self._failures[model] = count + 1
        delay = backoff_delay(count)
        self._backoff_until[model] = time.monotonic() + delay
        log.error("%s; retrying in %.0f s", reason, delay)

    async def _download(self, spec: WorkerSpec) -> None:
        try:
            evicted = self.store.make_room(spec.sha256, size=spec.size, keep={
                s.sha256 for s in self._desired.values()})
            for sha in evicted:
                log.info("evicted model %s from the cache (least recently used)", sha[:12])
            await self._fetcher.fetch(spec, stall_s=self._interval * self._liveness * 2)
            self._node_errors.pop(f"download {spec.model}", None)
            log.info("model %s stored (%d bytes, sha256 verified)", spec.model, spec.size)
        except ModelStoreError as exc:
            self._node_errors[f"download {spec.model}"] = f"download of {spec.model}: {exc}"
            self._fail(spec.model, f"download of {spec.model} failed: {exc}")
        finally:
            self._downloads.pop(spec.sha256, None)
            self._wake.set()

    async def _run_worker(self, worker: _Worker) -> None:
        spec = worker.spec
        self.store.touch(spec.sha256)
        if not await asyncio.to_thread(self.store.verify, spec.sha256):
            reason = (f"the cached copy of {spec.model} did not match its sha256 (a failing "
                      "disk or SD card?); it was deleted and is fetched again")
            worker.state, worker.detail = "failed", reason
            self._node_errors[f"model {spec.model}"] = reason
            log.error("%s", reason)
            self._wake.set()
            return
        try:
            worker.handle = await self._runtime.start(
                spec, path=self.store.path(spec.sha256),
                timeout_s=self.config.worker_start_timeout_s)
        except WorkerError as exc:
            worker.state, worker.detail = "failed", str(exc)
            self._node_errors[f"worker {spec.model}"] = str(exc)
            if isinstance(exc, RuntimeUnavailable):  # e.g. the image was removed: re-check
                self._runtime_ready = False
            self._fail(spec.model, str(exc))
            return
        worker.state, worker.detail = "ready", ""
        self._node_errors.pop(f"worker {spec.model}", None)
        self._node_errors.pop(f"model {spec.model}", None)
        log.info("worker for %s ready", spec.model)
        await self._work_loop(worker, worker.handle)

    async def _work_loop(self, worker: _Worker, handle: WorkerHandle) -> None:
        model = worker.spec.model
        replies = self._replies.setdefault(model, asyncio.Queue())
        while handle.alive():
            await self._send(WorkRequest(model=model, slots=1))
            try:
                reply = await asyncio.wait_for(replies.get(), timeout=5.0)
            except TimeoutError:
                continue
            if isinstance(reply, NoWork):
                await asyncio.sleep(reply.retry_after_s)
                continue
            worker.state, worker.lease = "busy", reply.lease_id
            result, lost = await self._execute(handle, reply)
            worker.lease = None
            if worker.cancelled == reply.lease_id:  # the other copy won: nothing to send
                worker.state = "ready" if handle.alive() else "failed"
                continue
            self._sent_results.append((time.monotonic(), result))
            worker.state = "ready" if handle.alive() else "failed"
            if result.error is None:  # it serves: a later crash backs off from the start
                self._failures.pop(model, None)
            await self._send(result)
            if lost:  # take no more work on it (each would fail and use up an attempt)
                break
        reason = handle.exit_reason() if not handle.alive() else "stopped answering"
        worker.state, worker.detail = "failed", f"worker {reason}"
        self._fail(model, f"worker for {model} {reason}")
        self._wake.set()

    async def _execute(self, handle: WorkerHandle, lease: WorkLease
                       ) -> tuple[WorkResult, bool]:
        """The result of one lease, and whether the worker was lost while serving it."""
        request = CompletionRequest(prompt=lease.prompt, stop=lease.stop,
                                    max_tokens=lease.max_tokens,
                                    temperature=lease.temperature, seed=lease.seed,
                                    kind=lease.kind)
        try:
            done = await handle.complete(request, timeout_s=min(lease.lease_s,
                                                                self.config.request_timeout_s))
        except WorkerError as exc:
            return WorkResult(lease_id=lease.lease_id, item_id=lease.item_id, output="",
                              measurement=None, error=str(exc)), isinstance(exc, WorkerLost)
        return WorkResult(
            lease_id=lease.lease_id, item_id=lease.item_id, output=done.text,
            measurement=Measurement(
                ttft_s=done.ttft_s, tpot_s=done.tpot_s, e2e_s=done.e2e_s,
                prompt_tokens=done.prompt_tokens, completion_tokens=done.completion_tokens,
                tokens_per_s=done.tokens_per_s, peak_rss_mb=done.peak_rss_mb,
                cpu_temp_c=hardware.read_cpu_temp_c())), False

    async def _stop_worker(self, worker: _Worker) -> None:
        if worker.task is not None:
            worker.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await worker.task
        if worker.handle is not None:
            await worker.handle.stop()


async def run_until_signalled(agent: Agent) -> None:
    """Run `agent` until SIGTERM or SIGINT, then stop it cleanly (workers stopped, bye sent)."""
    loop = asyncio.get_running_loop()
    task = asyncio.create_task(agent.run())
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await task


def _drain(queue: asyncio.Queue[Any]) -> None:
    while not queue.empty():
        queue.get_nowait()
