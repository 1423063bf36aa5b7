"""The `slmfleet` command: run the coordinator, an agent, the demo, and talk to the API."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Annotated

import typer
import yaml
from rich.console import Console

from coordinator.errors import SlmfleetError

app = typer.Typer(help="Evaluate small language models on a fleet of Raspberry Pi class "
                  "machines.", no_args_is_help=True, pretty_exceptions_enable=False)
console = Console()
err_console = Console(stderr=True)

ApiOption = Annotated[str, typer.Option("--api", envvar="SLMFLEET_API",
                                        help="Coordinator API base URL.")]
DEFAULT_API = "http://127.0.0.1:8080"


def _logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _fail(message: str, code: int = 1) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {message}")
    return typer.Exit(code)


@app.command()
def demo(
    nodes: Annotated[int, typer.Option(min=1, max=32, help="Local agents to start.")] = 3,
    limit: Annotated[int, typer.Option(min=1, help="Items per task.")] = 20,
    exit_after: Annotated[bool, typer.Option("--exit", help="Exit after the report.")] = False,
    data_dir: Annotated[Path, typer.Option(help="Where runs, models and logs go.")] = Path(
        ".slmfleet/demo"),
) -> None:
    """Embedded default: coordinator + local agents + bundled Gemma 3 270M, one real job."""
    from coordinator.demo import run_demo

    try:
        run_demo(nodes=nodes, limit=limit, exit_after=exit_after, data_root=data_dir.resolve(),
                 console=console)
    except SlmfleetError as exc:
        raise _fail(str(exc)) from None
    except KeyboardInterrupt:
        console.print("stopped")


@app.command()
def coordinator(
    data_dir: Annotated[Path, typer.Option(help="Store, join token and logs.")] = Path(
        ".slmfleet/coordinator"),
    api_host: str = "127.0.0.1",
    api_port: int = 8080,
    hub_host: Annotated[str, typer.Option(
        help="Address the ZeroMQ hub binds; 0.0.0.0 to accept agents from the lab network.")
    ] = "127.0.0.1",
    hub_port: int = 5555,
    token: Annotated[str | None, typer.Option(envvar="SLMFLEET_TOKEN",
                                              help="Join token (generated if absent).")] = None,
    database_url: Annotated[str | None, typer.Option(envvar="SLMFLEET_DATABASE_URL")] = None,
    verbose: bool = False,
) -> None:
    """Run the coordinator: HTTP API + status page + ZeroMQ hub."""
    from coordinator.server import Settings, join_token, serve

    _logging(verbose)
    settings = Settings(data_dir=data_dir, api_host=api_host, api_port=api_port,
                        hub_host=hub_host, hub_port=hub_port, token=token,
                        database_url=database_url)
    if token is None:
        console.print(f"join token: {join_token(settings)} (in {data_dir / 'join_token'})")
    try:
        asyncio.run(serve(settings))
    except KeyboardInterrupt:
        pass


@app.command()
def agent(
    coordinator: Annotated[str, typer.Option("--coordinator", help="Hub HOST:PORT.")],
    token: Annotated[str, typer.Option(envvar="SLMFLEET_TOKEN", help="Join token.")],
    name: Annotated[str | None, typer.Option(help="Node name (default: hostname).")] = None,
    cache_dir: Annotated[Path | None, typer.Option(
        help="Model cache and worker sockets (default: ~/.cache/slmfleet/agent).")] = None,
    runtime: Annotated[str, typer.Option(help="Worker runtime: process.")] = "process",
    verbose: bool = False,
) -> None:
    """Run a node agent that joins the coordinator and runs llama.cpp workers."""
    from node_agent.agent import Agent, AgentConfig, RegistrationRefused, run_until_signalled
    from node_agent.errors import AgentError

    if runtime != "process":
        raise _fail(f"--runtime {runtime} is not available yet; use --runtime process", 2)
    if ":" not in coordinator:
        raise _fail("--coordinator must be HOST:PORT, e.g. 192.168.1.10:5555", 2)
    _logging(verbose)
    cache = cache_dir or Path.home() / ".cache" / "slmfleet" / "agent"
    config = AgentConfig(coordinator=coordinator, token=token, cache_dir=cache.resolve())
    if name:
        config.name = name
    try:
        asyncio.run(run_until_signalled(Agent(config)))
    except RegistrationRefused as exc:
        raise _fail(str(exc), 3) from None
    except AgentError as exc:
        raise _fail(str(exc), 1) from None


@app.command()
def submit(job_file: Path, api: ApiOption = DEFAULT_API) -> None:
    """Submit a job spec (YAML or JSON) and print its id."""
    from coordinator.client import Client
    from coordinator.jobspec import parse_job_spec

    if not job_file.is_file():
        raise _fail(f"no job file at {job_file}")
    try:
        spec = parse_job_spec(job_file.read_text())
        job = Client(api).submit(spec.model_dump())
    except SlmfleetError as exc:
        raise _fail(str(exc)) from None
    console.print(f"job {job['id']} submitted: {job['total']} work items")


@app.command()
def jobs(api: ApiOption = DEFAULT_API) -> None:
    """List jobs with their progress."""
    _print_json_api(lambda c: c.jobs(), api)


@app.command()
def status(job_id: int, api: ApiOption = DEFAULT_API) -> None:
    """Show one job: state, progress and its results table."""
    from coordinator.client import Client
    from coordinator.render import results_table

    try:
        job = Client(api).job(job_id)
    except SlmfleetError as exc:
        raise _fail(str(exc)) from None
    console.print(f"job {job['id']} {job['name']}: {job['state']}, {job['done']}/"
                  f"{job['total']} done, {job['failed']} failed")
    console.print(results_table(job["summary"], title="results"))


@app.command()
def report(job_id: int, format: Annotated[str, typer.Option(help="table or json")] = "table",
           api: ApiOption = DEFAULT_API) -> None:
    """Print a job's results (per model × task and per node)."""
    from coordinator.client import Client
    from coordinator.render import results_table

    try:
        results = Client(api).results(job_id)
    except SlmfleetError as exc:
        raise _fail(str(exc)) from None
    if format == "json":
        console.print_json(json.dumps(results))
    elif format == "table":
        console.print(results_table(results["summary"], title=f"job {job_id}"))
        console.print(results_table(results["by_node"], title="per node"))
    else:
        raise _fail(f"--format {format} is not available yet; use table or json", 2)


@app.command()
def nodes(api: ApiOption = DEFAULT_API) -> None:
    """List nodes with their state and health."""
    _print_json_api(lambda c: c.nodes(), api)


@app.command()
def models(api: ApiOption = DEFAULT_API) -> None:
    """List registered models."""
    _print_json_api(lambda c: c.models(), api)


@app.command()
def topology(
    plan: Annotated[int, typer.Option("--plan", min=0, help="Number of nodes N.")],
    fanout: Annotated[int, typer.Option(min=1, help="Fan-out k.")] = 2,
    as_json: Annotated[bool, typer.Option("--json", help="Print the JSON snapshot.")] = False,
) -> None:
    """Plan the overlay offline for N nodes and fan-out k: edges and stats."""
    from topology import Overlay

    overlay = Overlay(nodes=plan, fanout=fanout)
    if as_json:
        console.print_json(json.dumps(overlay.snapshot()))
        return
    for edge in overlay.edges():
        console.print(f"{edge.a:>4} — {edge.b:<4} {edge.kind}")
    console.print(yaml.safe_dump(vars(overlay.stats()), sort_keys=False))


def _print_json_api(call: object, api: str) -> None:
    from coordinator.client import Client

    try:
        console.print_json(json.dumps(call(Client(api))))  # type: ignore[operator]
    except SlmfleetError as exc:
        raise _fail(str(exc)) from None


if __name__ == "__main__":
    app()
