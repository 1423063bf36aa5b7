"""Failure detection and reassignment: how long a dead node's leases stay stranded.

Each trial starts a real `Hub` (its own process, a SQLite store in a temporary directory)
and a job. A victim agent, its own process, registers first and takes `--leases` items
(one work request each), then only heartbeats once per interval, as a node whose workers
hang would. Then `--survivors` agents in another process register and ask for work the
way `node_agent.agent` does: a work request, and on `NoWork` a sleep of its
`retry_after_s`. Each item takes them `--work` seconds (0.1), and the job has enough items
after the victim's to keep them busy throughout, so the victim's items come back through
the drop; with `--work 0` they are idle (the job has only the victim's items), answer a
lease at once, and the scheduler may hand them backup copies of the victim's leases.
After a random wait of one to two intervals (so the kill falls anywhere in the victim's
heartbeat and the hub's check cycles) the victim is killed with SIGKILL. Measured from
the kill:

- detection: until the hub drops the node's session. Right after a drop the hub pushes
  the overlay topology to the live nodes, with the dropped node `up: false`; the survivors
  note when that first arrives. (Returning its leases to the queue happens in the same
  step, but a backup copy may have finished them before, so the store cannot show it.)
- reassignment: until each of the victim's items is leased to a survivor, after the drop
  returned it to the queue or by a backup copy (the scheduler's, possibly before the drop
  or even the kill); the slowest item counts. Also given from the drop.
- GET /nodes: when the API would first call the node unreachable, computed from its
  stored `last_seen` with the API's own rule (`coordinator.node_state`).

Targets, in heartbeat intervals: detection <= 3, reassignment <= 1 more.

Run: `.venv/bin/python -m benchmarks.failure_detection [--trials 5] [--interval 0.5]
[--liveness 3] [--leases 4] [--survivors 2] [--work S]`.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import zmq
import zmq.asyncio

from benchmarks.dispatch_rate import (
    MODEL,
    SPAWN,
    BenchmarkError,
    HubConfig,
    add_bench_model,
    heartbeats,
    hub_process,
    register,
    result_for,
    stop_process,
    work_items,
)
from coordinator import store as st
from node_agent.hardware import hardware_facts
from node_agent.protocol import (
    Heartbeat,
    NoWork,
    Topology,
    WorkLease,
    WorkRequest,
    decode,
    encode,
)

DETECTION_TARGET = 3.0  # intervals from the kill
REASSIGN_TARGET = 1.0  # intervals from detection
POLL_S = 0.002


@dataclass(frozen=True)
class Agents:
    port: int
    server_key: bytes
    interval_s: float
    count: int  # leases for the victim, agents for the survivors
    work_s: float = 0.0  # how long a survivor's worker takes per item


# --- the victim: takes leases, then only heartbeats -----------------------------------


def victim_main(config: Agents, report: Connection) -> None:
    asyncio.run(_victim(config, report))


async def _victim(config: Agents, report: Connection) -> None:
    context = zmq.asyncio.Context()
    sock, node_id = await register(context, port=config.port, server_key=config.server_key,
                                   name="victim", facts=hardware_facts())
    for _ in range(config.count):
        await sock.send_multipart(encode(WorkRequest(model=MODEL, slots=1)))
    items: list[int] = []
    while len(items) < config.count:
        message, _ = decode(await sock.recv_multipart())
        if isinstance(message, NoWork):
            raise BenchmarkError("the victim got no work: the job has fewer items than leases")
        if isinstance(message, WorkLease):
            items.append(message.item_id)
    report.send((node_id, items))
    seq = 0
    while True:  # alive until killed, answering none of its leases
        await sock.send_multipart(encode(Heartbeat(seq=seq)))
        seq += 1
        while await sock.poll(timeout=0):
            await sock.recv_multipart()
        await asyncio.sleep(config.interval_s)


# --- the survivors: poll for work as agents do ----------------------------------------


@dataclass
class Seen:
    """What the survivors saw, on time.monotonic() (one clock for all processes)."""

    leased: dict[int, float] = field(default_factory=dict)  # item id -> its lease arrived
    victim_down: float | None = None  # the first topology that shows the victim down


def survivors_main(config: Agents, victim: int, report: Connection, stop: Event) -> None:
    asyncio.run(_survivors(config, victim, report, stop))


async def _survivors(config: Agents, victim: int, report: Connection, stop: Event) -> None:
    context = zmq.asyncio.Context()
    facts = hardware_facts()
    sockets = await asyncio.gather(*(
        register(context, port=config.port, server_key=config.server_key,
                 name=f"survivor-{i}", facts=facts) for i in range(config.count)))
    report.send("registered")
    seen = Seen()
    tasks = []
    for sock, _ in sockets:
        replies: asyncio.Queue[WorkLease | NoWork] = asyncio.Queue()
        tasks += [asyncio.create_task(coroutine) for coroutine in (
            _read(sock, replies, victim=victim, seen=seen),
            _poll_for_work(sock, replies, seen=seen, work_s=config.work_s),
            heartbeats(sock, interval_s=config.interval_s))]
    try:
        while not stop.is_set():
            for task in tasks:
                if task.done():
                    task.result()
            await asyncio.sleep(0.01)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        context.destroy(linger=0)
    report.send(seen)


async def _read(sock: zmq.asyncio.Socket, replies: asyncio.Queue[WorkLease | NoWork], *,
                victim: int, seen: Seen) -> None:
    """Hand work replies to the work loop; note when the hub says the victim is down (it
    pushes the topology to the live nodes right after it drops a silent one)."""
    while True:
        message, _ = decode(await sock.recv_multipart())
        match message:
            case WorkLease() | NoWork():
                replies.put_nowait(message)
            case Topology() if seen.victim_down is None and any(
                    n.node_id == victim and not n.up for n in message.nodes):
                seen.victim_down = time.monotonic()
            case _:
                pass


async def _poll_for_work(sock: zmq.asyncio.Socket, replies: asyncio.Queue[WorkLease | NoWork],
                         *, seen: Seen, work_s: float) -> None:
    """An agent's work loop (`Agent._work_loop`) with a worker that takes `work_s`."""
    request = encode(WorkRequest(model=MODEL, slots=1))
    while True:
        await sock.send_multipart(request)
        reply = await replies.get()
        if isinstance(reply, NoWork):
            await asyncio.sleep(reply.retry_after_s)
            continue
        seen.leased.setdefault(reply.item_id, time.monotonic())
        if work_s:
            await asyncio.sleep(work_s)
        await sock.send_multipart(result_for(reply))


# --- one trial ------------------------------------------------------------------------


@dataclass(frozen=True)
class Trial:
    """Seconds from the kill."""

    dropped_s: float  # the hub drops the victim's session
    api_s: float  # GET /nodes would first call it unreachable
    released_s: list[float]  # each of its items is leased to a survivor

    @property
    def reassign_s(self) -> float:
        """From the drop to the last item's new lease (< 0: backups began before it)."""
        return max(self.released_s) - self.dropped_s


def _receive(report: Connection, process: BaseProcess, *, timeout_s: float) -> Any:
    deadline = time.monotonic() + timeout_s
    while not report.poll(0.05):
        if not process.is_alive() or time.monotonic() > deadline:
            raise BenchmarkError(f"no report from the {process.name} process within "
                                 f"{timeout_s:.0f} s (exit code {process.exitcode})")
    return report.recv()


def _wait(what: str, check: Callable[[], bool], *, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise BenchmarkError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(POLL_S)


def one_trial(work_dir: Path, *, interval_s: float, liveness: int, leases: int,
              survivors: int, work_s: float, rng: random.Random) -> Trial:
    """One kill. With `work_s` > 0 the job has enough items after the victim's to keep
    the survivors busy past the drop; else they are idle, polling."""
    url = f"sqlite:///{work_dir / 'store.db'}"
    store = st.Store(url)
    extra = math.ceil(survivors * (liveness + 5) * interval_s / work_s) if work_s else 0
    try:
        add_bench_model(store)
        job = st.create_job(store, name="failure-detection", spec={},
                            items=work_items(leases + extra))
        config = HubConfig(url=url, key_dir=work_dir, interval_s=interval_s,
                           liveness=liveness, lease_s=300.0)
        with hub_process(config) as hub:
            to_victim, from_victim = SPAWN.Pipe(duplex=False)
            victim = SPAWN.Process(target=victim_main, name="victim", args=(Agents(
                port=hub.port, server_key=hub.public_key, interval_s=interval_s,
                count=leases), from_victim))
            victim.start()
            to_survivors, from_survivors = SPAWN.Pipe(duplex=False)
            stop = SPAWN.Event()
            try:
                node_id, items = _receive(to_victim, victim, timeout_s=60)
                rest = SPAWN.Process(target=survivors_main, name="survivors", args=(Agents(
                    port=hub.port, server_key=hub.public_key, interval_s=interval_s,
                    count=survivors, work_s=work_s), node_id, from_survivors, stop))
                rest.start()
                _receive(to_survivors, rest, timeout_s=60)
                time.sleep(rng.uniform(1.0, 2.0) * interval_s)
                killed_wall, killed = time.time(), time.monotonic()
                victim.kill()  # SIGKILL: no bye, nothing closed on purpose
                _wait("the survivors to finish the victim's items", lambda: all(
                    i.status == "done" for i in st.job_items(store, job_id=job.id)
                    if i.id in items),
                    timeout_s=10 * liveness * interval_s + 60)
                # backups may finish the items before the drop: give the hub time for it
                time.sleep(max(0.0, killed + (liveness + 2) * interval_s - time.monotonic()))
            finally:
                stop.set()
                stop_process(victim)
            seen: Seen = _receive(to_survivors, rest, timeout_s=30)
            stop_process(rest)
        (node,) = [n for n in st.list_nodes(store) if n.id == node_id]
    finally:
        store.close()
    if seen.victim_down is None:
        raise BenchmarkError(f"the hub did not drop the victim within {liveness + 2} "
                             "intervals of its death")
    unreachable = node.last_seen.replace(tzinfo=UTC).timestamp() + liveness * interval_s
    return Trial(dropped_s=seen.victim_down - killed, api_s=unreachable - killed_wall,
                 released_s=[seen.leased[i] - killed for i in items])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--interval", type=float, default=0.5, help="heartbeat interval, s")
    parser.add_argument("--liveness", type=int, default=3)
    parser.add_argument("--leases", type=int, default=4, help="items the victim holds")
    parser.add_argument("--survivors", type=int, default=2)
    parser.add_argument("--work", type=float, default=0.1, metavar="S",
                        help="survivors' workers take S seconds per item and the job keeps "
                        "them busy (default 0.1); 0: idle survivors, polling")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    interval = args.interval
    rng = random.Random(args.seed)
    trials: list[Trial] = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in range(1, args.trials + 1):
            work_dir = Path(tmp) / f"trial-{n}"
            work_dir.mkdir()
            try:
                trial = one_trial(work_dir, interval_s=interval, liveness=args.liveness,
                                  leases=args.leases, survivors=args.survivors,
                                  work_s=args.work, rng=rng)
            except BenchmarkError as exc:
                print(f"trial {n}: failed: {exc}")
                continue
            trials.append(trial)
            early = sum(r < trial.dropped_s for r in trial.released_s)
            alive = sum(r < 0 for r in trial.released_s)
            print(f"trial {n}: after the kill, the hub dropped the node at "
                  f"{trial.dropped_s:.2f} s ({trial.dropped_s / interval:.2f} intervals), "
                  f"GET /nodes says unreachable at {trial.api_s:.2f} s "
                  f"({trial.api_s / interval:.2f}); its {len(trial.released_s)} items "
                  f"re-leased at {min(trial.released_s):.2f}-{max(trial.released_s):.2f} s "
                  f"({early} before the drop as backup copies, {alive} of them while the "
                  "victim was still alive)")
    if not trials:
        raise SystemExit("no trial completed")
    print(f"heartbeat interval {interval:.2f} s, liveness {args.liveness}, {args.leases} "
          f"leases on the victim, {args.survivors} survivors polling as agents do, "
          + (f"busy ({args.work:.2f} s per item)" if args.work else "idle")
          + "; in intervals:")
    rows = (("detection: kill -> hub drops the node", [t.dropped_s for t in trials],
             DETECTION_TARGET),
            ("reassignment: drop -> last item re-leased", [t.reassign_s for t in trials],
             REASSIGN_TARGET),
            ("kill -> last item re-leased", [max(t.released_s) for t in trials],
             DETECTION_TARGET + REASSIGN_TARGET),
            ("kill -> GET /nodes says unreachable", [t.api_s for t in trials],
             DETECTION_TARGET))
    for name, seconds, target in rows:
        median, worst = statistics.median(seconds) / interval, max(seconds) / interval
        print(f"  {name:<42} median {median:5.2f}, max {worst:5.2f}; target <= {target:.0f}: "
              f"median/target {median / target:.2f}, max/target {worst / target:.2f}")


if __name__ == "__main__":
    main()
