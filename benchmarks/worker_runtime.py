"""Container path vs process path: worker start-to-ready time and per-request overhead.

The anchor is the process runtime (a worker as a child process of the agent). Both
runtimes start workers for the same GGUF file, alternately, in this one process, and
then serve the same one-token requests. Reported, as medians with their ratio to the
anchor:

- start-to-ready: from `runtime.start()` to the worker's "ready" (model loaded);
- request round trip: the agent's wall time for one completion;
- request overhead: round trip minus the worker's own end-to-end time, i.e. what the
  transport and the runtime add around llama.cpp.

Run: `.venv/bin/python -m benchmarks.worker_runtime [--model PATH] [--starts 5]
[--requests 50]`. Needs a Docker engine and the worker image (`make images`);
without `--model` it writes the tiny GGUF the test suite uses.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import zmq.asyncio

from node_agent.docker_runtime import DEFAULT_IMAGE, DockerRuntime, DockerSettings
from node_agent.model_store import sha256_file
from node_agent.protocol import WorkerSpec
from node_agent.runtime import CompletionRequest, ProcessRuntime, WorkerRuntime

REQUEST = CompletionRequest(prompt="Label:", stop=(), max_tokens=1, temperature=0.0, seed=1)


async def measure(runtime: WorkerRuntime, spec: WorkerSpec, path: Path, *,
                  requests: int) -> tuple[float, list[float], list[float]]:
    started = time.perf_counter()
    worker = await runtime.start(spec, path=path, timeout_s=300)
    ready_s = time.perf_counter() - started
    round_trips, overheads = [], []
    try:
        await worker.complete(REQUEST, timeout_s=60)  # warm-up
        for _ in range(requests):
            sent = time.perf_counter()
            done = await worker.complete(REQUEST, timeout_s=60)
            round_trip = time.perf_counter() - sent
            round_trips.append(round_trip)
            overheads.append(round_trip - done.e2e_s)
    finally:
        await worker.stop()
    return ready_s, round_trips, overheads


async def run(path: Path, *, starts: int, requests: int, image: str) -> None:
    spec = WorkerSpec(model="bench", sha256=sha256_file(path), size=path.stat().st_size,
                      threads=1, n_ctx=512)
    context = zmq.asyncio.Context()
    runtimes: dict[str, WorkerRuntime] = {
        "process": ProcessRuntime(context=context),
        "docker": DockerRuntime(context=context, agent="benchmark",
                                settings=DockerSettings(image=image, network="host")),
    }
    for runtime in runtimes.values():
        await runtime.check()
    ready: dict[str, list[float]] = {name: [] for name in runtimes}
    trips: dict[str, list[float]] = {name: [] for name in runtimes}
    over: dict[str, list[float]] = {name: [] for name in runtimes}
    for _ in range(starts):  # alternate, so drift on a shared machine hits both alike
        for name, runtime in runtimes.items():
            ready_s, round_trips, overheads = await measure(runtime, spec, path,
                                                            requests=requests)
            ready[name].append(ready_s)
            trips[name].extend(round_trips)
            over[name].extend(overheads)
    context.destroy(linger=0)

    print(f"model {path.name} ({path.stat().st_size / 2**20:.1f} MiB), {starts} starts and "
          f"{starts * requests} one-token requests per runtime; medians; anchor = process")
    print(f"{'metric':<22}{'process':>12}{'docker':>12}{'docker/process':>16}")
    for label, data, unit in (("start-to-ready", ready, "s"),
                              ("request round trip", trips, "ms"),
                              ("request overhead", over, "ms")):
        scale = 1000.0 if unit == "ms" else 1.0
        anchor = statistics.median(data["process"]) * scale
        container = statistics.median(data["docker"]) * scale
        print(f"{label + ' (' + unit + ')':<22}{anchor:>12.3f}{container:>12.3f}"
              f"{container / anchor:>15.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="a GGUF file (default: the tiny model)")
    parser.add_argument("--starts", type=int, default=5)
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--image", default=DEFAULT_IMAGE)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = args.model
        if path is None:
            from tests.support.tiny_gguf import write_tiny_gguf

            path = write_tiny_gguf(Path(tmp) / "tiny.gguf")
            path.chmod(0o644)
        asyncio.run(run(path.resolve(), starts=args.starts, requests=args.requests,
                        image=args.image))


if __name__ == "__main__":
    main()
