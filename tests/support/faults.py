"""Fault injection for integration tests: a real fleet whose processes a test freezes,
kills and starts again, a model cache on a tmpfs too small for the model, and a model
file with flipped bytes.

`FaultFleet` wraps a `LocalFleet` (coordinator and agents as child processes). Every
fault acts on one process, by its id; a process started again gets the arguments it
had. `close()` ends everything the fleet ever ran, also the llama.cpp workers that a
killed agent leaves behind (found by the fleet's data directory in their command
line), so no fault outlives its test.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from coordinator.client import Client
from coordinator.demo import LocalFleet, joined, wait_for, workers_ready
from tests.support.requirements import missing

SETTLE_S = 0.5  # after a freeze: results already sent reach the store meanwhile
WORKER_MODULE = "node_agent.worker"


def command_of(process: subprocess.Popen[bytes]) -> list[str]:
    if not isinstance(process.args, list):
        raise TypeError(f"expected a command list, got {process.args!r}")
    return [str(arg) for arg in process.args]


def name_of(process: subprocess.Popen[bytes]) -> str:
    """The agent's `--name`, or "coordinator"."""
    args = command_of(process)
    return args[args.index("--name") + 1] if "--name" in args else "coordinator"


@dataclass
class FaultFleet:
    """A started fleet with the test model's workers ready on every agent."""

    fleet: LocalFleet
    client: Client
    model: str
    frozen: set[int] = field(default_factory=set)  # pids stopped with SIGSTOP

    @classmethod
    @contextlib.contextmanager
    def running(cls, fleet: LocalFleet, *, model: str, path: Path, also: Sequence[str] = (),
                ready: int | None = None) -> Iterator[FaultFleet]:
        """Start `fleet` and the agents named in `also`, register the model at `path` and
        wait until `ready` (default: every) agent runs a worker for it; close everything
        on the way out."""
        fleet.start()
        faulty = cls(fleet=fleet, client=Client(fleet.api_url, timeout_s=10), model=model)
        try:
            for name in also:
                fleet.spawn_agent(name)
            agents = fleet.nodes + len(also)
            client = joined(fleet, agents=agents)
            client.add_model(name=model, path=str(path), threads=1, n_ctx=2048)
            faulty.wait_ready(agents if ready is None else ready)
            yield faulty
        finally:
            faulty.close()

    @property
    def db(self) -> Path:
        return self.fleet.data_dir / "coordinator" / "slmfleet.db"

    def log(self, name: str) -> str:
        """The log of a fleet process: "coordinator" or an agent's name."""
        return (self.fleet.data_dir / "logs" / f"{name}.log").read_text(errors="replace")

    def wait(self, what: str, check: Callable[[], bool], *, timeout_s: float = 90) -> None:
        wait_for(what, check, fleet=self.fleet, timeout_s=timeout_s)

    def wait_ready(self, nodes: int) -> None:
        self.wait(f"{nodes} workers for {self.model} to be ready",
                  lambda: workers_ready(self.client, self.model, nodes) >= nodes)

    # --- the fleet's processes -----------------------------------------------------------

    def process(self, name: str) -> subprocess.Popen[bytes]:
        """The running process of agent `name`, or of the coordinator."""
        for process in self.fleet.processes:
            if name_of(process) == name and process.poll() is None:
                return process
        raise LookupError(f"no running fleet process named {name!r}")

    def node_id(self, name: str) -> int:
        return next(int(n["id"]) for n in self.client.nodes() if n["name"] == name)

    def node(self, name: str) -> dict[str, Any]:
        return next(n for n in self.client.nodes() if n["name"] == name)

    def workers_of(self, name: str) -> list[psutil.Process]:
        """Live llama.cpp worker processes that agent `name` started (in this run or an
        earlier one): their model path lies in its cache directory."""
        cache = str(self.fleet.data_dir / name) + os.sep
        return [p for p in _processes_mentioning(cache)
                if WORKER_MODULE in p.info["cmdline"]]

    def kill(self, name: str, *, sig: signal.Signals = signal.SIGKILL
             ) -> subprocess.Popen[bytes]:
        """Send `sig` to the process `name` alone (its children are not signalled) and
        wait for it to exit; the fleet no longer counts it as one of its processes."""
        process = self.process(name)
        process.send_signal(sig)
        if process.pid in self.frozen and sig != signal.SIGKILL:
            self.thaw(process.pid)  # a stopped process acts on no other signal
        process.wait(timeout=60)
        self.frozen.discard(process.pid)
        self.fleet.processes.remove(process)
        return process

    def stop(self, name: str) -> subprocess.Popen[bytes]:
        """Stop `name` as an operator would (SIGTERM: a clean shutdown) and wait for it."""
        return self.kill(name, sig=signal.SIGTERM)

    def start_again(self, process: subprocess.Popen[bytes]) -> subprocess.Popen[bytes]:
        """Start an exited fleet process again with its arguments (same data dir, ports,
        name and cache); it logs on into the same file."""
        if process.poll() is None:
            raise ValueError(f"{name_of(process)} (pid {process.pid}) is still running")
        # LocalFleet runs `python -m coordinator.cli ARGS...`: start ARGS again
        return self.fleet._spawn(command_of(process)[3:], f"{name_of(process)}.log")

    def freeze(self, pid: int) -> None:
        """SIGSTOP one process: it neither runs nor answers until `thaw`."""
        os.kill(pid, signal.SIGSTOP)
        self.frozen.add(pid)

    def thaw(self, pid: int) -> None:
        os.kill(pid, signal.SIGCONT)
        self.frozen.discard(pid)

    def freeze_when(self, pid: int, held: Callable[[], list[int]], *, what: str,
                    timeout_s: float = 60) -> list[int]:
        """Freeze process `pid` at a moment `held()` names work items (say, the leases a
        node holds) and return them. A result sent just before the freeze is given
        `SETTLE_S` to reach the store; if nothing is held after all, the process is thawed
        and the next chance waited for. It stays frozen until `thaw`, a kill or `close`."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if held():
                self.freeze(pid)
                time.sleep(SETTLE_S)
                if found := held():
                    return found
                self.thaw(pid)
            time.sleep(0.02)
        raise AssertionError(f"no moment within {timeout_s} s when {what}")

    def freeze_holding_lease(self, name: str, *, job_id: int, pid: int | None = None
                             ) -> list[int]:
        """Freeze `pid` (default: agent `name`) while agent `name` holds a lease of
        `job_id`; the ids of the items it holds then."""
        node = self.node_id(name)
        return self.freeze_when(self.process(name).pid if pid is None else pid,
                                lambda: self.leased(job_id=job_id, node_id=node),
                                what=f"{name} held a lease of job {job_id}")

    def registrations(self, name: str) -> int:
        """How often agent `name` has registered with the coordinator (its log says)."""
        return self.log("coordinator").count(f"({name}) registered")

    def wait_back(self, name: str, *, registrations: int, timeout_s: float = 90) -> None:
        """Wait until agent `name` has registered more than `registrations` times, has
        reported since, and runs a ready worker."""
        def back() -> bool:
            node = self.node(name)
            return self.registrations(name) > registrations \
                and node["state"] in ("ready", "busy") \
                and any(w["model"] == self.model and w["state"] in ("ready", "busy")
                        for w in node["workers"])
        self.wait(f"{name} to register again and run a worker", back, timeout_s=timeout_s)

    def leased(self, *, job_id: int, node_id: int | None = None) -> list[int]:
        """Ids of the job's items leased now (to `node_id`, if given), from the store."""
        query = "SELECT id FROM work_items WHERE job_id = ? AND status = 'leased'"
        args: tuple[int, ...] = (job_id,)
        if node_id is not None:
            query, args = query + " AND lease_node = ?", (job_id, node_id)
        with contextlib.closing(sqlite3.connect(self.db, timeout=30)) as connection:
            return [row[0] for row in connection.execute(query + " ORDER BY id", args)]

    def close(self) -> None:
        """End every process of the fleet: the running ones cleanly, then (SIGKILL) any
        other that names the fleet's data dir, such as workers of a killed agent."""
        for pid in list(self.frozen):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)  # a stopped process cannot act on SIGTERM
        self.frozen.clear()
        try:
            self.fleet.stop()
        finally:
            for stray in _processes_mentioning(str(self.fleet.data_dir) + os.sep):
                with contextlib.suppress(psutil.Error):
                    stray.kill()
                    stray.wait(timeout=10)


def exited(process: psutil.Process) -> bool:
    """Whether `process` has ended (a zombie that no one reaped yet has)."""
    try:
        return not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _processes_mentioning(text: str) -> list[psutil.Process]:
    """Processes (not this one) with `text` in their command line."""
    found = []
    for process in psutil.process_iter(["pid", "cmdline"]):
        cmdline = " ".join(process.info["cmdline"] or ())
        if process.pid != os.getpid() and text in cmdline:
            found.append(process)
    return found


# --- the disk -----------------------------------------------------------------------------


@contextlib.contextmanager
def tmpfs(path: Path, *, size_kib: int) -> Iterator[Path]:
    """A tmpfs of `size_kib` KiB mounted at `path` for the block (needs root and `mount`;
    skipped locally, failed in CI when it cannot be mounted)."""
    path.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kib}k,mode=0700", "tmpfs",
                        str(path)], check=True, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", None) or exc
        missing(f"cannot mount a tmpfs at {path}: {str(detail).strip()}; the full-disk "
                "test needs root and mount(8)")
    try:
        yield path
    finally:
        unmounted = subprocess.run(["umount", str(path)], capture_output=True, timeout=30)
        if unmounted.returncode != 0:  # still busy: detach it now, freed once unused
            subprocess.run(["umount", "-l", str(path)], check=True, capture_output=True,
                           timeout=30)


def flip_bytes(path: Path, *, offset: int, count: int) -> None:
    """Invert `count` bytes of `path` from `offset` (a negative offset counts from the
    end), in place: same size, same name, other content."""
    size = path.stat().st_size
    start = offset if offset >= 0 else size + offset
    with path.open("r+b") as handle:
        handle.seek(start)
        data = handle.read(count)
        handle.seek(start)
        handle.write(bytes(b ^ 0xFF for b in data))
