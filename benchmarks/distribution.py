"""Model distribution over the overlay: how long until every node holds a model.

A model of S bytes (the bundled Gemma 3 270M GGUF, 253 MB) goes to N agents on N hosts
(network namespaces) whose links are shaped to B each way like full-duplex NICs, the
coordinator's upload to B as well (`NetLab.shape_duplex`, `shape_gateway`). The anchor
is S/B, the time one link needs to carry the file once: a pipelined tree can come close
to it, a star from the coordinator (fan-out >= N, agents without relays) needs N·S/B.
Targets (the issue): overlay time <= 1.5·S/B + a small constant, the star at least N/2
times slower, the origin sending at most 2·S. TCP/IP headers take 4% of B, so even a
perfect pipeline shows about 1.04·S/B.

Agents run the docker runtime with no engine (DOCKER_HOST points nowhere), so they only
download: no worker loads the model and takes the CPU from the transfer. A node is done
when its verified file is in place (`<cache>/models/<sha256>.gguf`, renamed there after
its sha256 matched); the clock starts when the model's registration returns. Besides
the times it prints the bytes over each link (interface counters, / S), the CPU the
whole machine spent meanwhile and the agents' warnings, to tell a slow protocol from a
saturated link or CPU.

B defaults to 80 Mbit/s: on the 2-core development machine the N = 15 overlay keeps the
cores about 70% busy (CURVE, 16 processes, tc), so twice that rate would make the CPU
the limit; the stars take N·S/B (3 and 7 minutes), the whole run about 20 minutes.

Needs root and iproute2. Run: `.venv/bin/python -m benchmarks.distribution [--nodes 7 15]
[--mbit 80] [--skip-star] [--model PATH] [--keep DIR]`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from math import inf
from pathlib import Path
from types import FrameType
from typing import Any

from coordinator.client import Client, ClientError
from coordinator.demo import DemoError, LocalFleet, gemma_path, joined, wait_for
from tests.support.netlab import NetLab, available

OVERLAY_FANOUT = 2
STAR_FANOUT = 64  # the CLI's maximum; any fan-out >= N puts every node under the hub
SLACK_S = 5.0  # the "small constant": the model reaching the agents, sha256 checks
POLL_S = 0.1
PROGRESS_S = 30.0  # how often a long run says how far it is
NO_ENGINE = "unix:///nonexistent/docker.sock"
MODEL_NAME = "distribution-bench"
RELAY_PORT = 7070


@dataclass(frozen=True)
class Run:
    """One distribution: seconds from registration until each node held the model."""

    nodes: int
    done_at: dict[str, float]  # the nodes that got it in time
    delivered: float  # share of all N·S bytes on the nodes' disks at the end
    origin_bytes: int | None  # what the coordinator sent; None if it does not say
    cpu_busy: float  # share of all cores busy during the distribution (any process)
    warnings: int  # WARNING lines the agents logged meanwhile (stalls, reconnects)
    loads: dict[str, float]  # bytes over each link ("node-3 up") / S, headers included
    workers: int  # worker processes the agents ran at the end (should be 0)

    @property
    def seconds(self) -> float:
        """Until the last node held the model; infinite if one never did."""
        return max(self.done_at.values()) if len(self.done_at) == self.nodes else inf


def cpu_times() -> tuple[float, float]:
    """(busy, total) jiffies of all cores since boot, from /proc/stat."""
    fields = [float(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def worker_processes(agents: set[int]) -> int:
    """Worker processes (the process runtime's command) started by these agents."""
    count = 0
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            parent = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            count += parent in agents and b"node_agent.worker" in (proc / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            pass  # the process ended while we looked
    return count


def origin_bytes(client: Client) -> int | None:
    view: dict[str, Any] = client._call("GET", "/topology")
    sent = view.get("distribution", {}).get("origin_bytes_sent")
    return int(sent) if sent is not None else None


def at_least(client: Client, nodes: int) -> Callable[[], bool]:
    return lambda: len(client.nodes()) >= nodes


def settled(client: Client) -> bool:
    """Does every node reach the hub along its planned route (through its relays)?"""
    view: dict[str, Any] = client._call("GET", "/topology")
    return all(row.get("via") == (row["route_to_root"] or [])[1:-1]
               for row in view["nodes"][1:])


def on_disk(path: Path) -> int:
    """Bytes of the model a node holds: the verified file, else what its part file holds
    (allocated blocks: chunks may land at their offsets in a sparse file, out of order)."""
    with contextlib.suppress(FileNotFoundError):
        return path.stat().st_size
    with contextlib.suppress(FileNotFoundError):
        part = path.with_suffix(".part").stat()
        return min(part.st_size, part.st_blocks * 512)
    return 0


def agent_warnings(logs: Path) -> int:
    return sum(log.read_text(errors="replace").count(" WARNING ")
               for log in logs.glob("node-*.log"))


def link_loads(lab: NetLab, before: list[tuple[int, int]], size: int) -> dict[str, float]:
    """Bytes over each link way since `before` (`lab.link_bytes` of hosts 0..N), / S."""
    loads: dict[str, float] = {}
    for host, then in enumerate(before):
        name = f"node-{host}" if host else "coordinator"
        now = lab.link_bytes(host)
        loads[f"{name} down"] = (now[0] - then[0]) / size
        loads[f"{name} up"] = (now[1] - then[1]) / size
    return loads


def distribute(*, model: Path, nodes: int, mbit: float, fanout: int, data_dir: Path,
               subnet: int, tag: str) -> Run:
    """Join `nodes` agents on shaped hosts, register `model`, wait until all hold it (or
    3 times a star's S·N/B has passed)."""
    relays = fanout < nodes  # a star has no relays: every node pulls from the hub
    size = model.stat().st_size
    with NetLab(hosts=nodes, subnet=subnet, tag=tag) as lab, \
            LocalFleet(data_dir=data_dir, nodes=0, token="bench", hub_host=lab.gateway,
                       coordinator_args=("--fanout", str(fanout))) as fleet:
        lab.shape_gateway(mbit=mbit)
        for host in range(1, nodes + 1):
            lab.shape_duplex(host, mbit=mbit)
        client = joined(fleet, agents=0, client_timeout_s=120)  # registering hashes S
        for host in range(1, nodes + 1):
            relay = ("--relay-bind", f"0.0.0.0:{RELAY_PORT}", "--relay-address",
                     f"{lab.address(host)}:{RELAY_PORT}") if relays else ()
            fleet.spawn_agent(f"node-{host}", "--runtime", "docker", *relay,
                              wrapper=lab.wrapper(host))
            wait_for("the agent to join", at_least(client, host), fleet=fleet, timeout_s=60)
        try:
            wait_for("routes through the relays", lambda: settled(client), fleet=fleet,
                     timeout_s=30)
        except DemoError as exc:
            print(f"warning: {exc}; measuring anyway", file=sys.stderr)
        sha256 = client.add_model(name=MODEL_NAME, path=str(model), threads=1,
                                  n_ctx=512)["sha256"]
        started, (busy0, total0) = time.monotonic(), cpu_times()
        counted = [lab.link_bytes(host) for host in range(nodes + 1)]
        warned = agent_warnings(data_dir / "logs")  # while joining: not the distribution's
        files = {f"node-{h}": data_dir / f"node-{h}" / "models" / f"{sha256}.gguf"
                 for h in range(1, nodes + 1)}
        deadline = started + 3 * nodes * size * 8 / (mbit * 1e6) + 120
        done_at: dict[str, float] = {}
        next_note = started + PROGRESS_S
        while len(done_at) < nodes and (now := time.monotonic()) < deadline:
            fleet.check_alive()
            done_at |= {name: now - started for name, path in files.items()
                        if name not in done_at and path.exists()}
            if now > next_note:
                held = sum(map(on_disk, files.values())) / (nodes * size)
                print(f"    {now - started:.0f} s: {len(done_at)} of {nodes} nodes done, "
                      f"{held:.0%} of the bytes delivered", flush=True)
                next_note += PROGRESS_S
            time.sleep(POLL_S)
        busy1, total1 = cpu_times()
        loads = link_loads(lab, counted, size)
        try:
            sent = origin_bytes(client)
        except ClientError:
            sent = None
        return Run(nodes=nodes, done_at=done_at,
                   delivered=sum(map(on_disk, files.values())) / (nodes * size),
                   origin_bytes=sent, cpu_busy=(busy1 - busy0) / (total1 - total0),
                   warnings=agent_warnings(data_dir / "logs") - warned, loads=loads,
                   workers=worker_processes({p.pid for p in fleet.processes}))


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def outcome(run: Run) -> str:
    if run.seconds < inf:
        return f"{run.seconds:.1f} s"
    return (f"did not finish ({len(run.done_at)} of {run.nodes} nodes, {run.delivered:.0%} "
            "of the bytes)")


def describe(label: str, run: Run) -> None:
    times = sorted(run.done_at.values())
    spread = (f" (first {times[0]:.1f}, median {statistics.median(times):.1f})"
              if run.seconds < inf else "")
    print(f"  {label}: {outcome(run)}{spread}; CPU {run.cpu_busy:.0%} busy; "
          f"{run.warnings} agent warnings; {run.workers} worker processes")
    busiest = sorted(run.loads.items(), key=lambda item: -item[1])[:3]
    print(f"    link loads / S: coordinator up {run.loads['coordinator up']:.2f}; busiest "
          + ", ".join(f"{name} {load:.2f}" for name, load in busiest))
    if times:
        print("    done at (s): " + ", ".join(
            f"{name} {at:.1f}" for name, at in sorted(run.done_at.items(),
                                                      key=lambda item: item[1])))


def report(*, nodes: int, size: int, mbit: float, overlay: Run, star: Run | None) -> None:
    anchor = size * 8 / (mbit * 1e6)
    ratio, allowed = overlay.seconds / anchor, 1.5 + SLACK_S / anchor
    print(f"N = {nodes}: S/B = {anchor:.1f} s")
    describe(f"overlay (fan-out {OVERLAY_FANOUT})", overlay)
    if star is not None:
        describe(f"star (fan-out {STAR_FANOUT})", star)
    print(f"  time / (S/B) = {ratio:.2f}, target <= 1.5 + {SLACK_S:.0f} s/(S/B) = "
          f"{allowed:.2f}: {verdict(ratio <= allowed)}")
    if star is not None and inf in (star.seconds, overlay.seconds):
        print(f"  star / overlay = n/a (a run did not finish), target >= N/2 = "
              f"{nodes / 2:.1f}: FAIL")
    elif star is not None:
        speedup = star.seconds / overlay.seconds
        print(f"  star / overlay = {speedup:.2f}, target >= N/2 = {nodes / 2:.1f}: "
              f"{verdict(speedup >= nodes / 2)}")
    if overlay.origin_bytes is None:
        print("  origin bytes / S = n/a (the coordinator does not report "
              "distribution.origin_bytes_sent)")
    else:
        share = overlay.origin_bytes / size
        print(f"  origin bytes / S = {share:.2f}, target <= 2: {verdict(share <= 2)}")
    if star is not None and star.origin_bytes is not None:
        print(f"  (star: origin bytes / S = {star.origin_bytes / size:.2f})")


def leave(_signum: int, _frame: FrameType | None) -> None:
    """On SIGTERM, leave through the same clean-up (processes, namespaces) as on Ctrl-C."""
    raise SystemExit(143)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[7, 15])
    parser.add_argument("--mbit", type=float, default=80.0,
                        help="B: every link's rate each way, Mbit/s")
    parser.add_argument("--skip-star", action="store_true")
    parser.add_argument("--keep", type=Path, default=None,
                        help="keep each run's logs and caches under this directory")
    parser.add_argument("--model", type=Path, default=None,
                        help="a GGUF to send (default: the bundled Gemma 3 270M)")
    args = parser.parse_args()
    if (reason := available()) is not None:
        raise SystemExit(f"cannot run: {reason}")
    model = (args.model or gemma_path(Path(".slmfleet/demo/models"))).resolve()
    signal.signal(signal.SIGTERM, leave)
    os.environ["DOCKER_HOST"] = NO_ENGINE  # agents inherit it: no engine, no workers
    size = model.stat().st_size
    with NetLab(hosts=1, subnet=100, tag=f"dc{os.getpid() % 10000}") as lab:
        lab.shape_duplex(1, mbit=args.mbit)
        lab.shape_gateway(mbit=args.mbit)
        measured = (lab.measure_mbit(0, 1), lab.measure_mbit(1, 0))
    print(f"model {model.name}: S = {size / 1e6:.1f} MB; B = {args.mbit:g} Mbit/s; one TCP "
          f"stream carries {measured[0]:.1f} Mbit/s coordinator -> host, {measured[1]:.1f} "
          "host -> coordinator (payload: about 0.96·B after headers)")
    runs = 0
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep.resolve() / time.strftime("%Y%m%d-%H%M%S") if args.keep \
            else Path(tmp)
        for nodes in args.nodes:
            results: dict[str, Run] = {}
            for mode, fanout in (("overlay", OVERLAY_FANOUT), ("star", STAR_FANOUT)):
                if mode == "star" and args.skip_star:
                    continue
                results[mode] = distribute(
                    model=model, nodes=nodes, mbit=args.mbit, fanout=fanout,
                    data_dir=root / f"{mode}-{nodes}", subnet=101 + runs,
                    tag=f"d{os.getpid() % 10000}r{runs}")
                runs += 1
                print(f"{mode} to {nodes} nodes: {outcome(results[mode])}", flush=True)
            report(nodes=nodes, size=size, mbit=args.mbit, overlay=results["overlay"],
                   star=results.get("star"))


if __name__ == "__main__":
    main()
