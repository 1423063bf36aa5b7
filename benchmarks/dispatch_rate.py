"""The coordinator's dispatch + ingest rate: items/s through a real hub, per store backend.

A real `Hub` (ZeroMQ ROUTER with CURVE, the store on SQLite or PostgreSQL) runs in its
own process pinned to CPU 0. A second process pinned to CPU 1 runs `--agents` simulated
agents: each is a DEALER socket with its own CURVE key that registers with the join token,
keeps `--depth` work requests outstanding and answers every lease at once with a result
(a label and a measurement), as an agent whose worker takes no time would. The job has
`--items` classification items with the built-in dataset's prompts, so the hub's scorer
does its real (cheap) work. The rate is the job's items divided by the time from the first
lease the agents receive to the job's `finished_at` in the store. Anchor: the issue's
target of 2,000 items/s on one core. `--profile` runs cProfile in the hub process (the
event loop's thread: decoding, the store, ZeroMQ; scoring runs in worker threads) and
prints where its time went; the rate of a profiled run is lower than an unprofiled one's.

Run: `.venv/bin/python -m benchmarks.dispatch_rate [--items 3000] [--agents 8]
[--depth 2] [--backend sqlite|postgresql|both] [--profile]` (PostgreSQL is skipped,
saying why, when its server cannot be reached).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import logging
import multiprocessing
import os
import pstats
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from multiprocessing.synchronize import Event
from pathlib import Path

import psutil
import zmq
import zmq.asyncio

from coordinator import store as st
from coordinator.datasets.loader import load_builtin
from coordinator.evaluation.tasks import get_task
from coordinator.hub import Hub
from node_agent import curve
from node_agent.hardware import HardwareFacts, hardware_facts
from node_agent.protocol import (
    PROTOCOL_VERSION,
    ErrorReply,
    Heartbeat,
    Measurement,
    NoWork,
    Register,
    Rejected,
    Welcome,
    WorkLease,
    WorkRequest,
    WorkResult,
    decode,
    encode,
)

TARGET = 2000.0  # items/s, the target for dispatch + ingest on one core
HUB_CPU, LOAD_CPU = 0, 1
TOKEN = "bench-token"
MODEL = "bench-model"
OUTPUT = "billing"  # a valid label: the scorer parses it as a real answer
MEASUREMENT = Measurement(ttft_s=0.01, tpot_s=0.005, e2e_s=0.02, prompt_tokens=300,
                          completion_tokens=2, tokens_per_s=100.0, peak_rss_mb=300.0)
SPAWN = multiprocessing.get_context("spawn")  # no ZeroMQ context survives a fork


class BenchmarkError(RuntimeError):
    """A benchmark run could not complete; the message says which step failed."""


def pin(cpu: int | None) -> None:
    """Run this process (and the threads it starts later) on `cpu` only, if there is one."""
    if cpu is not None and cpu < (os.cpu_count() or 1):
        os.sched_setaffinity(0, {cpu})


# --- the job ------------------------------------------------------------------------


def add_bench_model(store: st.Store) -> None:
    """A model row for the items' model, as an operator's registration makes (no file)."""
    st.add_model(store, name=MODEL, sha256="0" * 64, size=1, path="/nonexistent.gguf",
                 threads=1, n_ctx=2048)


def work_items(count: int) -> list[st.NewWorkItem]:
    """`count` classification items: the built-in dataset's prompts and references, repeated."""
    task = get_task("classification")
    planned = task.plan(load_builtin("classification"), limit=None, seed=42)
    params = {"temperature": 0.0, "prompting": "few_shot", "n_ctx": 2048,
              "kind": task.spec.kind, "max_tokens": task.spec.max_tokens}
    return [st.NewWorkItem(model=MODEL, task=task.name, dataset="builtin:classification",
                           item_key=p.item_key, repeat=i // len(planned), prompt=p.prompt,
                           reference=p.reference,
                           params={**params, "stop": list(p.stop), "seed": 42 + i})
            for i, p in ((i, planned[i % len(planned)]) for i in range(count))]


# --- the hub process ----------------------------------------------------------------


@dataclass(frozen=True)
class HubConfig:
    url: str
    key_dir: Path
    interval_s: float = 1.0
    liveness: int = 3
    lease_s: float = 300.0
    cpu: int | None = None
    profile_path: Path | None = None


def hub_main(config: HubConfig, ready: Connection, stop: Event) -> None:
    """Child process: serve a Hub on 127.0.0.1 until `stop` is set; send its port first."""
    pin(config.cpu)
    logging.basicConfig(level=logging.WARNING, format="hub: %(levelname)s %(message)s")
    asyncio.run(_serve_hub(config, ready, stop))


async def _serve_hub(config: HubConfig, ready: Connection, stop: Event) -> None:
    store = st.Store(config.url)
    context = zmq.asyncio.Context()
    hub = Hub(store=store, token=TOKEN, bind="tcp://127.0.0.1:0",
              keys=curve.load_or_create(config.key_dir, "hub"),
              heartbeat_interval_s=config.interval_s, liveness=config.liveness,
              lease_s=config.lease_s, context=context)
    profiler = cProfile.Profile() if config.profile_path else None
    running = asyncio.create_task(hub.run())
    ready.send(hub.port)
    if profiler is not None:
        profiler.enable()
    try:
        while not stop.is_set() and not running.done():
            await asyncio.sleep(0.1)
    finally:
        if profiler is not None and config.profile_path is not None:
            profiler.disable()
            profiler.dump_stats(config.profile_path)
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        store.close()
        context.destroy(linger=0)


@dataclass(frozen=True)
class HubHandle:
    port: int
    public_key: bytes
    process: BaseProcess


@contextmanager
def hub_process(config: HubConfig, *, timeout_s: float = 60.0) -> Iterator[HubHandle]:
    """A hub in a child process for the duration of the block (keys made here first)."""
    public_key = curve.load_or_create(config.key_dir, "hub").public
    receive, send = SPAWN.Pipe(duplex=False)
    stop = SPAWN.Event()
    process = SPAWN.Process(target=hub_main, args=(config, send, stop), name="hub")
    process.start()
    try:
        deadline = time.monotonic() + timeout_s
        while not receive.poll(0.1):
            if not process.is_alive() or time.monotonic() > deadline:
                raise BenchmarkError(f"the hub process did not start within {timeout_s:.0f} "
                                     f"s (exit code {process.exitcode})")
        yield HubHandle(port=receive.recv(), public_key=public_key, process=process)
    finally:
        stop.set()
        stop_process(process)


def stop_process(process: BaseProcess, *, timeout_s: float = 15.0) -> None:
    process.join(timeout_s)
    if process.is_alive():
        process.kill()
        process.join(5)


# --- simulated agents ---------------------------------------------------------------


async def register(context: zmq.asyncio.Context, *, port: int, server_key: bytes, name: str,
                   facts: HardwareFacts, timeout_s: float = 30.0
                   ) -> tuple[zmq.asyncio.Socket, int]:
    """A DEALER socket with a new CURVE key, registered as `name`; and its node id."""
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    curve.KeyPair(*zmq.curve_keypair()).apply_client(sock, server_key=server_key)
    sock.connect(f"tcp://127.0.0.1:{port}")
    await sock.send_multipart(encode(Register(protocol=PROTOCOL_VERSION, token=TOKEN,
                                              name=name, facts=facts)))
    deadline = time.monotonic() + timeout_s
    while await sock.poll(timeout=max(1, int((deadline - time.monotonic()) * 1000))):
        message, _ = decode(await sock.recv_multipart())
        if isinstance(message, Welcome):
            return sock, message.node_id
        if isinstance(message, Rejected):
            raise BenchmarkError(f"{name} was refused: {message.reason}")
    raise BenchmarkError(f"{name} got no welcome within {timeout_s:.0f} s")


async def heartbeats(sock: zmq.asyncio.Socket, *, interval_s: float) -> None:
    """Beat like an agent does (`node_agent.agent`): one heartbeat per interval."""
    seq = 0
    while True:
        await sock.send_multipart(encode(Heartbeat(seq=seq)))
        seq += 1
        await asyncio.sleep(interval_s)


def result_for(lease: WorkLease) -> list[bytes]:
    return encode(WorkResult(lease_id=lease.lease_id, item_id=lease.item_id, output=OUTPUT,
                             measurement=MEASUREMENT))


@dataclass(frozen=True)
class LoadConfig:
    port: int
    server_key: bytes
    agents: int
    depth: int
    interval_s: float


@dataclass
class Tally:
    """What the simulated agents saw; times are the wall clock (comparable with the store's)."""

    leases: int = 0
    no_work: int = 0
    first_lease: float = 0.0
    last_result: float = 0.0
    cpu_at_first_lease: float = 0.0
    cpu_at_last_result: float = 0.0
    later: set[asyncio.Task[None]] = field(default_factory=set)

    def cpu_share(self) -> float:
        """The share of its core the load generator used while leases came in."""
        wall = self.last_result - self.first_lease
        return (self.cpu_at_last_result - self.cpu_at_first_lease) / wall if wall > 0 else 0.0


def load_main(config: LoadConfig, report: Connection, stop: Event) -> None:
    """Child process: run the simulated agents until `stop` is set, then report a Tally."""
    pin(LOAD_CPU)
    tally = asyncio.run(_drive(config, stop))
    tally.later.clear()
    report.send(tally)


async def _drive(config: LoadConfig, stop: Event) -> Tally:
    context = zmq.asyncio.Context()
    tally = Tally()
    facts = hardware_facts()
    sockets = await asyncio.gather(*(
        register(context, port=config.port, server_key=config.server_key,
                 name=f"instant-{i}", facts=facts) for i in range(config.agents)))
    tasks = [asyncio.create_task(coroutine) for sock, _ in sockets for coroutine in (
        _serve_instantly(sock, depth=config.depth, tally=tally),
        heartbeats(sock, interval_s=config.interval_s))]
    try:
        while not stop.is_set():
            for task in tasks:
                if task.done():
                    task.result()  # a failed agent fails the run
            await asyncio.sleep(0.05)
        return tally
    finally:
        for task in [*tasks, *tally.later]:
            task.cancel()
        await asyncio.gather(*tasks, *tally.later, return_exceptions=True)
        context.destroy(linger=0)


async def _serve_instantly(sock: zmq.asyncio.Socket, *, depth: int, tally: Tally) -> None:
    """Keep `depth` requests outstanding; answer each lease at once, back off on no work."""
    request = encode(WorkRequest(model=MODEL, slots=1))
    for _ in range(depth):
        await sock.send_multipart(request)
    while True:
        message, _ = decode(await sock.recv_multipart())
        match message:
            case WorkLease():
                if tally.leases == 0:
                    tally.first_lease, tally.cpu_at_first_lease = time.time(), time.process_time()
                tally.leases += 1
                await sock.send_multipart(result_for(message))
                tally.last_result, tally.cpu_at_last_result = time.time(), time.process_time()
                await sock.send_multipart(request)
            case NoWork():
                tally.no_work += 1
                later = asyncio.create_task(_send_later(sock, request, message.retry_after_s))
                tally.later.add(later)
                later.add_done_callback(tally.later.discard)
            case Rejected() | ErrorReply():
                raise BenchmarkError(f"the hub answered {message!r}")
            case _:
                pass  # heartbeats, desired workers, topology


async def _send_later(sock: zmq.asyncio.Socket, frames: list[bytes], delay_s: float) -> None:
    await asyncio.sleep(delay_s)
    await sock.send_multipart(frames)


# --- one measurement ----------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    items: int
    seconds: float
    hub_cpu: float  # share of the hub's core
    load_cpu: float  # share of the load generator's core
    postgres_cpu: float | None  # cores' worth used by PostgreSQL server processes
    other_cpu: float  # cores' worth used by everything else on the machine
    no_work: int

    @property
    def rate(self) -> float:
        return self.items / self.seconds


def _cpu_seconds(processes: list[psutil.Process]) -> float:
    total = 0.0
    for process in processes:
        with contextlib.suppress(psutil.Error):
            times = process.cpu_times()
            total += times.user + times.system
    return total


def _postgres_processes() -> list[psutil.Process]:
    return [p for p in psutil.process_iter(["name"]) if p.info["name"] == "postgres"]


def _busy_seconds() -> float:
    times = psutil.cpu_times()
    return float(sum(times)) - times.idle - getattr(times, "iowait", 0.0)


def measure(url: str, *, items: int, agents: int, depth: int, work_dir: Path,
            profile_path: Path | None = None) -> Result:
    """Items/s for a job of `items` items through a hub on `url` and `agents` agents."""
    store = st.Store(url)
    try:
        add_bench_model(store)
        job = st.create_job(store, name="dispatch-rate", spec={}, items=work_items(items))
        config = HubConfig(url=url, key_dir=work_dir, cpu=HUB_CPU, profile_path=profile_path)
        with hub_process(config) as hub:
            hub_ps = psutil.Process(hub.process.pid)
            receive, send = SPAWN.Pipe(duplex=False)
            stop = SPAWN.Event()
            load = SPAWN.Process(target=load_main, name="agents", args=(LoadConfig(
                port=hub.port, server_key=hub.public_key, agents=agents, depth=depth,
                interval_s=config.interval_s), send, stop))
            before = (_cpu_seconds([hub_ps]), _cpu_seconds(_postgres_processes()),
                      _busy_seconds())
            load.start()
            try:
                finished = _wait_finished(store, job_id=job.id, watch=[hub.process, load],
                                          timeout_s=max(120.0, items / 20))
                after = (_cpu_seconds([hub_ps]), _cpu_seconds(_postgres_processes()),
                         _busy_seconds())
            finally:
                stop.set()
            if not receive.poll(30):
                raise BenchmarkError("the agents process sent no report")
            tally: Tally = receive.recv()
            stop_process(load)
        seconds = finished.replace(tzinfo=UTC).timestamp() - tally.first_lease
        hub_s, postgres_s, busy_s = (b - a for a, b in zip(before, after, strict=True))
        postgres_s = max(0.0, postgres_s) if url.startswith("postgresql") else 0.0
        load_s = tally.cpu_at_last_result - tally.cpu_at_first_lease
        return Result(items=items, seconds=seconds, hub_cpu=hub_s / seconds,
                      load_cpu=tally.cpu_share(),
                      postgres_cpu=postgres_s / seconds if postgres_s else None,
                      other_cpu=max(0.0, busy_s - hub_s - postgres_s - load_s) / seconds,
                      no_work=tally.no_work)
    finally:
        store.close()


def _wait_finished(store: st.Store, *, job_id: int, watch: list[BaseProcess],
                   timeout_s: float) -> datetime:
    """The job's finished_at, once the hub has recorded its last item."""
    deadline = time.monotonic() + timeout_s
    while True:
        job = st.get_job(store, job_id=job_id)
        if job.state != "running":
            if job.state != "finished" or job.finished_at is None:
                raise BenchmarkError(f"the job ended {job.state}")
            return job.finished_at
        for process in watch:
            if not process.is_alive():
                raise BenchmarkError(f"the {process.name} process exited with code "
                                     f"{process.exitcode}")
        if time.monotonic() > deadline:
            raise BenchmarkError(f"the job did not finish within {timeout_s:.0f} s: "
                                 f"{st.job_progress(store, job_id=job_id)}")
        time.sleep(0.2)


# --- reporting ----------------------------------------------------------------------


def print_profile(path: Path, *, top: int = 15) -> None:
    stats = pstats.Stats(str(path))
    stats.strip_dirs()
    for order in ("cumulative", "tottime"):
        print(f"--- hub process, top {top} by {order} time (cProfile, event-loop thread) ---")
        stats.sort_stats(order).print_stats(top)


def report(backend: str, result: Result, *, agents: int, depth: int, profiled: bool) -> None:
    note = " (under cProfile: slower than unprofiled)" if profiled else ""
    print(f"{backend + ':':<12}{result.items} items, {agents} agents x {depth} requests: "
          f"{result.rate:6.0f} items/s in {result.seconds:.2f} s{note}; "
          f"{result.rate / TARGET:.2f} x the {TARGET:.0f}/s target")
    postgres = "" if result.postgres_cpu is None else \
        f", PostgreSQL server {result.postgres_cpu:.0%} of a core"
    print(f"{'':12}CPU: hub {result.hub_cpu:.0%} of its core, agents {result.load_cpu:.0%} "
          f"of theirs{postgres}, everything else {result.other_cpu:.0%} of a core; "
          f"{result.no_work} no-work replies")


@contextmanager
def backend_url(backend: str, work_dir: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{work_dir / 'dispatch.db'}"
        return
    from tests.support.postgres import fresh_schema

    with fresh_schema() as url:
        yield url


def postgres_unreachable() -> str | None:
    from tests.support.postgres import _unreachable

    return _unreachable()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=3000)
    parser.add_argument("--agents", type=int, default=8)
    parser.add_argument("--depth", type=int, default=2,
                        help="work requests each agent keeps outstanding")
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--profile", action="store_true",
                        help="run cProfile in the hub process and print its top entries")
    args = parser.parse_args()
    if (os.cpu_count() or 1) < 2:
        print("note: one CPU only: the hub and the agents share it")
    pin(LOAD_CPU)  # this process polls the store: keep it off the hub's core
    rates: dict[str, float] = {}
    for backend in ("sqlite", "postgresql"):
        if args.backend not in (backend, "both"):
            continue
        if backend == "postgresql" and (reason := postgres_unreachable()) is not None:
            print(f"postgresql: skipped: {reason}")
            continue
        with tempfile.TemporaryDirectory() as tmp, backend_url(backend, Path(tmp)) as url:
            profile_path = Path(tmp) / "hub.prof" if args.profile else None
            try:
                result = measure(url, items=args.items, agents=args.agents,
                                 depth=args.depth, work_dir=Path(tmp),
                                 profile_path=profile_path)
            except BenchmarkError as exc:
                print(f"{backend + ':':<12}failed: {exc}")
            else:
                report(backend, result, agents=args.agents, depth=args.depth,
                       profiled=args.profile)
                rates[backend] = result.rate
            if profile_path is not None and profile_path.exists():
                print_profile(profile_path)
    if len(rates) == 2:
        print(f"sqlite / postgresql = {rates['sqlite'] / rates['postgresql']:.2f}")


if __name__ == "__main__":
    main()
