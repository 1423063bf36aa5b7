"""Worker runtimes: how an agent starts, talks to and stops its llama.cpp workers.

`WorkerRuntime` is the interface; `ProcessRuntime` runs each worker as a local
subprocess (`python -m node_agent.worker`), `DockerRuntime` (in `docker_runtime`) as a
container. Either way the agent binds a ZeroMQ PAIR socket on loopback TCP and the
worker connects to it (no socket-file paths, which Unix limits to ~107 bytes). Every wait has a
timeout; a worker that cannot start, dies or times out raises `WorkerError`, and a
failed or cancelled start leaves no process or socket behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import psutil
import zmq
import zmq.asyncio

from node_agent.errors import CompletionCancelled, WorkerError, WorkerLost
from node_agent.protocol import WorkerSpec


@dataclass(frozen=True)
class CompletionRequest:
    prompt: str
    stop: tuple[str, ...]
    max_tokens: int
    temperature: float
    seed: int
    kind: str = "complete"  # or "score": the prompt's token log-probs, as JSON text


@dataclass(frozen=True)
class Completion:
    text: str
    ttft_s: float
    tpot_s: float
    e2e_s: float
    prompt_tokens: int
    completion_tokens: int
    peak_rss_mb: float

    @property
    def tokens_per_s(self) -> float:
        decode_s = self.e2e_s - self.ttft_s
        if self.completion_tokens <= 1 or decode_s <= 0:
            return self.completion_tokens / self.e2e_s if self.e2e_s > 0 else 0.0
        return (self.completion_tokens - 1) / decode_s


class WorkerHandle(Protocol):
    model: str
    ref: str  # the runtime's own name for it: a pid, a container id

    def alive(self) -> bool: ...

    def exit_reason(self) -> str: ...

    def rss_mb(self) -> float: ...

    async def complete(self, request: CompletionRequest, *, timeout_s: float) -> Completion: ...

    async def cancel(self) -> None:
        """Stop the completion in progress, if any: `complete` then raises
        `CompletionCancelled`."""
        ...

    async def stop(self) -> None: ...


class WorkerRuntime(Protocol):
    """How an agent runs workers: local processes, or Docker containers."""

    name: str

    async def check(self) -> None:
        """Raise `RuntimeUnavailable`, saying how to fix it, if no worker can run here."""
        ...

    async def start(self, spec: WorkerSpec, *, path: Path, timeout_s: float) -> WorkerHandle:
        """A ready worker for `spec` on the model file at `path`, or `WorkerError`."""
        ...

    async def leftovers(self, *, keep: Collection[str]) -> list[str]:
        """Refs of this agent's workers that the runtime still runs but the agent does not
        hold (outside `keep`), e.g. containers left by an earlier run of the agent."""
        ...

    async def remove(self, ref: str) -> None:
        """Stop and remove a leftover worker."""
        ...


class PairWorker(ABC):
    """A worker reached over a ZeroMQ PAIR socket that the agent binds and the worker
    connects to; subclasses say how the worker runs (`alive`, `exit_reason`, `terminate`).
    """

    def __init__(self, *, model: str, ref: str, socket: zmq.asyncio.Socket) -> None:
        self.model = model
        self.ref = ref
        self._socket = socket
        self._peak_rss_mb = 0.0
        self._lock = asyncio.Lock()
        self._current: str | None = None  # the request the worker serves now

    @abstractmethod
    def alive(self) -> bool: ...

    @abstractmethod
    def exit_reason(self) -> str: ...

    @abstractmethod
    def current_rss_mb(self) -> float: ...

    @abstractmethod
    async def terminate(self) -> None:
        """Make sure the worker is gone (after it was asked to stop)."""

    def rss_mb(self) -> float:
        rss = self.current_rss_mb()
        self._peak_rss_mb = max(self._peak_rss_mb, rss)
        return rss

    async def complete(self, request: CompletionRequest, *, timeout_s: float) -> Completion:
        async with self._lock:
            if not self.alive():
                raise WorkerLost(f"worker for {self.model} {self.exit_reason()}")
            request_id = uuid.uuid4().hex
            payload = {"type": "complete", "kind": request.kind, "id": request_id,
                       "prompt": request.prompt,
                       "stop": list(request.stop), "max_tokens": request.max_tokens,
                       "temperature": request.temperature, "seed": request.seed}
            try:  # a PAIR send with no connected peer would wait forever
                await self._socket.send(json.dumps(payload).encode(), flags=zmq.NOBLOCK)
            except zmq.Again:
                raise WorkerLost(f"worker for {self.model} is not connected") from None
            self._current = request_id
            try:
                reply = await self._receive(timeout_s=timeout_s)
            finally:
                self._current = None
            self.rss_mb()
            if reply.get("type") == "cancelled" and reply.get("id") == request_id:
                raise CompletionCancelled(f"completion on {self.model} cancelled")
            if reply.get("type") != "done" or reply.get("id") != request_id:
                raise WorkerError(f"worker for {self.model} failed: "
                                  f"{reply.get('message', reply)}")
            return Completion(
                text=str(reply["text"]), ttft_s=float(reply["ttft_s"]),
                tpot_s=float(reply["tpot_s"]), e2e_s=float(reply["e2e_s"]),
                prompt_tokens=int(reply["prompt_tokens"]),
                completion_tokens=int(reply["completion_tokens"]),
                peak_rss_mb=self._peak_rss_mb,
            )

    async def _receive(self, *, timeout_s: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if await self._socket.poll(timeout=200):
                raw = await self._socket.recv()
                try:
                    reply = json.loads(raw)
                except ValueError:
                    reply = None
                if not isinstance(reply, dict):
                    raise WorkerLost(f"worker for {self.model} sent an unreadable reply: "
                                      f"{raw[:80]!r}")
                return reply
            if not self.alive():
                raise WorkerLost(f"worker for {self.model} {self.exit_reason()}")
        raise WorkerLost(f"worker for {self.model} did not answer within {timeout_s:.0f} s")

    @property
    def serving(self) -> bool:
        """Whether a completion is in progress."""
        return self._current is not None

    async def cancel(self) -> None:
        """Ask the worker to stop the completion in progress (it checks between tokens and
        answers `cancelled`)."""
        if self._current is not None and self.alive():
            with contextlib.suppress(zmq.ZMQError):
                await self._socket.send(json.dumps({"type": "cancel",
                                                    "id": self._current}).encode(),
                                        flags=zmq.NOBLOCK)

    async def wait_ready(self, *, timeout_s: float) -> None:
        reply = await self._receive(timeout_s=timeout_s)
        if reply.get("type") != "ready":
            raise WorkerError(f"worker for {self.model} failed to start: "
                              f"{reply.get('message', reply)}")
        self.rss_mb()

    async def stop(self) -> None:
        if self.alive():
            with contextlib.suppress(zmq.ZMQError):  # incl. Again: the worker already left
                await self._socket.send(json.dumps({"type": "stop"}).encode(), flags=zmq.NOBLOCK)
        try:
            await self.terminate()
        finally:
            self._socket.close(linger=0)


def bind_pair(context: zmq.asyncio.Context) -> tuple[zmq.asyncio.Socket, int]:
    """A PAIR socket bound to a free loopback port, for one worker to connect to."""
    socket = context.socket(zmq.PAIR)
    socket.setsockopt(zmq.LINGER, 0)
    try:
        return socket, socket.bind_to_random_port("tcp://127.0.0.1")
    except zmq.ZMQError:
        socket.close(linger=0)
        raise


def worker_args(spec: WorkerSpec, *, model_path: str, port: int) -> list[str]:
    """The worker's command-line arguments (after `python -m node_agent.worker`)."""
    return ["--model", model_path, "--endpoint", f"tcp://127.0.0.1:{port}",
            "--threads", str(spec.threads), "--n-ctx", str(spec.n_ctx)]


class ProcessWorker(PairWorker):
    """A llama.cpp worker running as a child process of the agent."""

    def __init__(self, *, model: str, process: subprocess.Popen[bytes],
                 socket: zmq.asyncio.Socket) -> None:
        super().__init__(model=model, ref=str(process.pid), socket=socket)
        self._process = process

    def alive(self) -> bool:
        return self._process.poll() is None

    def exit_reason(self) -> str:
        return f"exited with code {self._process.returncode}"

    @property
    def pid(self) -> int:
        return self._process.pid

    def current_rss_mb(self) -> float:
        try:
            return float(psutil.Process(self._process.pid).memory_info().rss) / 2**20
        except psutil.Error:
            return 0.0

    async def terminate(self) -> None:
        try:
            await asyncio.wait_for(asyncio.to_thread(self._process.wait), timeout=5)
        except TimeoutError:
            self._process.kill()
            await asyncio.to_thread(self._process.wait)


class ProcessRuntime:
    """Runs workers as local processes: the embedded default. CPU and memory limits in a
    worker spec are not enforced here (they are for containers)."""

    name = "process"

    def __init__(self, *, context: zmq.asyncio.Context, run_dir: Path | None = None) -> None:
        self._context = context
        self._run_dir = run_dir or Path(tempfile.mkdtemp(prefix="slmfleet-workers-"))
        self._run_dir.mkdir(parents=True, exist_ok=True)

    async def check(self) -> None:
        return None

    async def start(self, spec: WorkerSpec, *, path: Path, timeout_s: float) -> ProcessWorker:
        try:
            socket, port = bind_pair(self._context)
        except zmq.ZMQError as exc:
            raise WorkerError(f"cannot start a worker for {spec.model}: {exc}") from exc
        try:
            command = [sys.executable, "-m", "node_agent.worker",
                       *worker_args(spec, model_path=str(path), port=port)]
            # the worker dies with this agent (node_agent.worker.end_with_agent)
            env = {**os.environ, "SLMFLEET_AGENT_PID": str(os.getpid())}
            process = subprocess.Popen(command, env=env, cwd=self._run_dir,
                                       stdin=subprocess.DEVNULL)
        except OSError as exc:
            socket.close(linger=0)
            raise WorkerError(f"cannot start a worker for {spec.model}: {exc}") from exc
        worker = ProcessWorker(model=spec.model, process=process, socket=socket)
        try:
            await worker.wait_ready(timeout_s=timeout_s)
        except BaseException:  # WorkerError, or cancelled while loading: leave nothing behind
            await asyncio.shield(worker.stop())
            raise
        return worker

    async def leftovers(self, *, keep: Collection[str]) -> list[str]:
        return []  # child processes never outlive the agent's knowledge of them

    async def remove(self, ref: str) -> None:
        return None
