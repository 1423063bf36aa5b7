"""The `slmfleet` command: run the coordinator, an agent, the demo, and talk to the API."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
import yaml
from rich.console import Console
from rich.markup import escape

from coordinator.errors import SlmfleetError

if TYPE_CHECKING:
    from coordinator.client import Client

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
    """Print `message` as one error line (never wrapped, never read as markup)."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    return typer.Exit(code)


@app.command()
def demo(
    nodes: Annotated[int, typer.Option(min=1, max=32, help="Local agents to start.")] = 3,
    limit: Annotated[int, typer.Option(min=1, help="Items per task (five tasks).")] = 10,
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
    database_url: Annotated[str | None, typer.Option(
        envvar="SLMFLEET_DATABASE_URL",
        help="The store: postgresql+psycopg://USER:PASSWORD@HOST:PORT/DATABASE for a shared "
             "PostgreSQL one (default: SQLite, <data-dir>/slmfleet.db). Its schema is "
             "migrated when the coordinator starts.")] = None,
    fanout: Annotated[int, typer.Option(min=1, max=64, help="Fan-out k of the overlay tree "
                                                       "(GET /api/v1/topology).")] = 2,
    heartbeat_interval: Annotated[float, typer.Option(
        min=0.1, max=60, help="Seconds between heartbeats (agents take it from the "
        "coordinator).")] = 1.0,
    liveness: Annotated[int, typer.Option(
        min=2, max=100, help="Heartbeat intervals of silence after which a node is "
        "unreachable and its leases are requeued.")] = 3,
    lease_s: Annotated[float, typer.Option(
        "--lease-s", min=1, help="Seconds a node may work on one item before it goes back "
        "to the queue.")] = 300.0,
    backups: Annotated[bool, typer.Option(
        help="At a job's tail, copy items running late on slow or silent nodes to idle "
             "faster ones (the first result wins). --no-backups leaves them to liveness "
             "and lease expiry.")] = True,
    verbose: bool = False,
) -> None:
    """Run the coordinator: HTTP API + status page + ZeroMQ hub."""
    from coordinator.server import Settings, hub_keys, join_token, serve
    from coordinator.store import Store
    from node_agent.errors import AgentError

    _logging(verbose)
    settings = Settings(data_dir=data_dir, api_host=api_host, api_port=api_port,
                        hub_host=hub_host, hub_port=hub_port, token=token,
                        database_url=database_url, fanout=fanout,
                        heartbeat_interval_s=heartbeat_interval, liveness=liveness,
                        lease_s=lease_s, backups=backups)
    try:  # first: a wrong URL or an unreachable server changes nothing
        store = Store(settings.db_url)
    except SlmfleetError as exc:  # StoreError, SchemaError
        raise _fail(str(exc), 2) from None
    console.print(f"store: {store.engine.url.render_as_string(hide_password=True)}",
                  highlight=False, soft_wrap=True)
    if token is None:
        console.print(f"join token: {join_token(settings)} (in {data_dir / 'join_token'})")
    try:
        public = hub_keys(data_dir).public.decode()
    except AgentError as exc:  # a key file others can read, or a broken one
        raise _fail(str(exc)) from None
    console.print(f"hub key: {public} (in {data_dir / 'hub.key'}); agents: "
                  "--coordinator-key", highlight=False)
    try:
        asyncio.run(serve(settings, store=store))
    except KeyboardInterrupt:
        pass


@app.command()
def agent(
    coordinator: Annotated[str, typer.Option("--coordinator", help="Hub HOST:PORT.")],
    token: Annotated[str, typer.Option(envvar="SLMFLEET_TOKEN", help="Join token.")],
    coordinator_key: Annotated[str, typer.Option(
        envvar="SLMFLEET_COORDINATOR_KEY",
        help="The hub's CURVE public key: its 40 characters, or the path of the "
             "coordinator's <data-dir>/hub.key (waited for up to 2 minutes).")],
    name: Annotated[str | None, typer.Option(help="Node name (default: hostname).")] = None,
    cache_dir: Annotated[Path | None, typer.Option(
        envvar="SLMFLEET_CACHE_DIR",
        help="Model cache and worker run files (default: ~/.cache/slmfleet/agent).")] = None,
    runtime: Annotated[str, typer.Option(
        envvar="SLMFLEET_RUNTIME",
        help="Worker runtime: docker, process, or auto (docker on a Raspberry Pi whose "
             "Docker engine answers, else process).")] = "auto",
    relay_bind: Annotated[str | None, typer.Option(
        envvar="SLMFLEET_RELAY_BIND",
        help="HOST:PORT to relay on for this node's overlay children (e.g. 0.0.0.0:5556); "
             "without it the node is a leaf and its children go around it.")] = None,
    relay_address: Annotated[str | None, typer.Option(
        envvar="SLMFLEET_RELAY_ADDRESS",
        help="HOST:PORT other nodes reach the relay at (default: --relay-bind).")] = None,
    cache_limit_mb: Annotated[int | None, typer.Option(
        envvar="SLMFLEET_CACHE_LIMIT_MB", min=1,
        help="Size limit of the model cache, MiB; least recently used models no worker "
             "wants are evicted to make room (default: no limit).")] = None,
    worker_image: Annotated[str, typer.Option(
        envvar="SLMFLEET_WORKER_IMAGE", help="docker: the worker image.")
    ] = "slmfleet-worker:latest",
    worker_network: Annotated[str, typer.Option(
        envvar="SLMFLEET_WORKER_NETWORK",
        help="docker: network of worker containers; they must reach this agent's "
             "loopback: host, container:NAME, or auto (host, or this agent's own "
             "container when it runs in one).")] = "auto",
    worker_cpus: Annotated[float | None, typer.Option(
        envvar="SLMFLEET_WORKER_CPUS", min=0.01,
        help="docker: cap every worker at this many CPUs (emulate a Pi class).")] = None,
    worker_memory_mb: Annotated[int | None, typer.Option(
        envvar="SLMFLEET_WORKER_MEMORY_MB", min=64,
        help="docker: cap every worker's memory, MiB (emulate a Pi class).")] = None,
    docker_url: Annotated[str | None, typer.Option(
        envvar="DOCKER_HOST", help="docker: the engine's address (default: local socket).")
    ] = None,
    verbose: bool = False,
) -> None:
    """Run a node agent that joins the coordinator and runs llama.cpp workers."""
    from node_agent import curve, hardware
    from node_agent.agent import Agent, AgentConfig, RegistrationRefused, run_until_signalled
    from node_agent.docker_runtime import DockerSettings
    from node_agent.errors import AgentError
    from node_agent.runtime_choice import choose_runtime, docker_engine_answers

    if ":" not in coordinator:
        raise _fail("--coordinator must be HOST:PORT, e.g. 192.168.1.10:5555", 2)
    if runtime not in ("auto", "docker", "process"):
        raise _fail(f"--runtime {runtime}: use docker, process or auto", 2)
    _logging(verbose)
    on_pi = runtime == "auto" and hardware.read_pi_model() is not None
    chosen = choose_runtime(runtime, on_pi=on_pi,
                            engine_answers=on_pi and docker_engine_answers(docker_url))
    cache = cache_dir or Path.home() / ".cache" / "slmfleet" / "agent"
    try:
        server_key = curve.wait_for_public_key(coordinator_key, timeout_s=120)
    except curve.CurveKeyError as exc:
        raise _fail(str(exc), 2) from None
    config = AgentConfig(coordinator=coordinator, token=token, cache_dir=cache.resolve(),
                         coordinator_key=server_key, cache_limit_mb=cache_limit_mb,
                         relay_bind=relay_bind, relay_address=relay_address or relay_bind,
                         runtime=chosen, docker=DockerSettings(
                             image=worker_image, network=worker_network, base_url=docker_url,
                             max_cpus=worker_cpus, max_memory_mb=worker_memory_mb))
    console.print(f"worker runtime: {chosen}", highlight=False)
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
    """Show one job: state, progress and its results tables."""
    from coordinator.client import Client
    from coordinator.reports import render_table

    try:
        client = Client(api)
        job = client.job(job_id)
        report = client.report(job_id)
    except SlmfleetError as exc:
        raise _fail(str(exc)) from None
    console.print(f"job {job['id']} {job['name']}: {job['state']}, {job['done']}/"
                  f"{job['total']} done, {job['failed']} failed")
    for table in render_table(report):
        console.print(table)


@app.command()
def report(
    job_id: int,
    format: Annotated[str, typer.Option(
        help="table, csv, json, latex or html (html writes a folder with plots).")] = "table",
    out: Annotated[Path | None, typer.Option(
        help="Write here instead of printing (a folder for html; default report-JOB).")] = None,
    api: ApiOption = DEFAULT_API,
) -> None:
    """A job's report: quality with 95% intervals, latency, tokens/s and memory."""
    from coordinator.client import Client
    from coordinator.reports import FORMATS, node_table, render_table, render_text, write_html

    if format not in FORMATS:
        raise _fail(f"--format {format} is not one of {', '.join(FORMATS)}", 2)
    try:
        data = Client(api).report(job_id)
    except SlmfleetError as exc:
        raise _fail(str(exc)) from None
    if format == "html":
        page = write_html(data, out or Path(f"report-{job_id}"))
        console.print(f"wrote {page} (open it in a browser; plots beside it)")
    elif format == "table" and out is None:
        for table in render_table(data):
            console.print(table)
        console.print(node_table(data))
    elif out is not None:
        out.write_text(render_text(data, format), encoding="utf-8")
        console.print(f"wrote {out}")
    else:
        print(render_text(data, format), end="")


@app.command()
def compare(
    base: Annotated[int, typer.Argument(help="The baseline job id.")],
    candidate: Annotated[int, typer.Argument(help="The candidate job id.")],
    fail_on: Annotated[list[str] | None, typer.Option(
        "--fail-on", help='A regression gate, e.g. "ner.f1_strict < -0.02" (repeatable).')
    ] = None,
    api: ApiOption = DEFAULT_API,
) -> None:
    """Candidate minus base per task and metric, with paired-bootstrap 95% intervals.

    Exits 1 when a --fail-on rule holds for the whole interval (a regression beyond the
    bound with statistical confidence), so it can gate CI.
    """
    from rich.table import Table

    from coordinator.client import Client
    from coordinator.compare import Delta, describe, parse_rule, violations

    try:
        rules = [parse_rule(text) for text in fail_on or []]
        result = Client(api).compare(base=base, candidate=candidate)
        deltas = [Delta(**d) for d in result["deltas"]]
        broken = violations(rules, deltas)
    except SlmfleetError as exc:
        raise _fail(str(exc), 2) from None
    table = Table(title=f"job {candidate} vs job {base} (candidate − base, paired items: "
                  f"{', '.join(f'{t} {n}' for t, n in result['paired_items'].items())})")
    for header in ("task", "metric", "delta", "95% interval", ""):
        table.add_column(header, justify="left" if header in ("task", "metric") else "right")
    for d in deltas:
        better = (d.low > 0) if d.higher_is_better else (d.high < 0)
        worse = (d.high < 0) if d.higher_is_better else (d.low > 0)
        table.add_row(d.task, d.metric, f"{d.delta:+.4f}", f"[{d.low:+.4f}, {d.high:+.4f}]",
                      "better" if better else "worse" if worse else "")
    console.print(table)
    for rule, delta in broken:
        err_console.print(f"[bold red]regression:[/] {describe(rule, delta)}")
    if broken:
        raise typer.Exit(1)


@app.command()
def cancel(job_id: int, api: ApiOption = DEFAULT_API) -> None:
    """Cancel a running job: open items are dropped; finished results stay."""
    from coordinator.client import Client

    try:
        job = Client(api).cancel(job_id)
    except SlmfleetError as exc:
        raise _fail(str(exc)) from None
    console.print(f"job {job['id']} {job['state']}: {job['done']} done, {job['cancelled']} "
                  "cancelled")


@app.command()
def judge(
    job_id: Annotated[int, typer.Argument(help="A job with finished rag items.")],
    model: Annotated[str, typer.Option(help="A registered model to judge with.")],
    api: ApiOption = DEFAULT_API,
) -> None:
    """Have a model in the fleet judge every RAG answer of a job (yes/no): a new job."""
    from coordinator.client import Client

    try:
        job = Client(api).judge(job_id, model=model)
    except SlmfleetError as exc:
        raise _fail(str(exc)) from None
    console.print(f"job {job['id']} submitted: {model} judges {job['total']} answers of job "
                  f"{job_id}; see slmfleet report {job['id']}")


def _listing_group(name: str, *, help: str, listing: Callable[[Client], object]
                   ) -> typer.Typer:
    """A command group that, without a subcommand, prints the API's list of its objects."""
    group = typer.Typer(help=help, no_args_is_help=False, invoke_without_command=True)
    app.add_typer(group, name=name)

    @group.callback()
    def _list(ctx: typer.Context, api: ApiOption = DEFAULT_API) -> None:
        if ctx.invoked_subcommand is None:
            _print_json_api(listing, api)

    return group


datasets_app = _listing_group(
    "datasets", help="List datasets (built-in and registered) with task, version, sha256 "
    "and test items; `datasets add` registers one.", listing=lambda c: c.datasets())


@datasets_app.command("add")
def datasets_add(
    path: Annotated[Path, typer.Argument(help="A JSONL or CSV file in the task's schema.")],
    task: Annotated[str, typer.Option(help="classification, translation, ner, "
                                           "summarization or rag.")],
    name: Annotated[str | None, typer.Option(help="Name to use in job specs "
                                                  "(default: the file name).")] = None,
    labels: Annotated[Path | None, typer.Option(
        help="classification: JSON object of label -> description.")] = None,
    documents: Annotated[Path | None, typer.Option(
        help="rag: the document collection (JSONL of id, title, text).")] = None,
    api: ApiOption = DEFAULT_API,
) -> None:
    """Validate a dataset file locally, then register it with the coordinator."""
    from coordinator.client import Client
    from coordinator.datasets.loader import load_dataset_file

    try:
        label_map = json.loads(labels.read_text(encoding="utf-8")) if labels else None
        dataset = load_dataset_file(path, task=task, labels=label_map, documents=documents,
                                    name=name)
        body = {"name": dataset.name, "task": task,
                "format": {".csv": "csv", ".txt": "text"}.get(path.suffix.lower(), "jsonl"),
                "content": path.read_text(encoding="utf-8"), "labels": label_map,
                "documents": documents.read_text(encoding="utf-8") if documents else None}
        added = Client(api).add_dataset(body)
    except (SlmfleetError, OSError, ValueError) as exc:
        raise _fail(str(exc)) from None
    console.print(f"registered dataset {added['name']} ({task}, {added['items']} test items, "
                  f"{added['ref']}); use it in a job spec as dataset: {added['name']}")


nodes_app = _listing_group("nodes", help="List nodes with their state and health; "
                           "`nodes drain`/`resume`/`revoke` act on one.",
                           listing=lambda c: c.nodes())


@nodes_app.command("drain")
def nodes_drain(node_id: int, api: ApiOption = DEFAULT_API) -> None:
    """Drain a node: it gets no new work items; those it holds finish (state `draining`)."""
    _print_json_api(lambda c: c.drain_node(node_id), api)


@nodes_app.command("resume")
def nodes_resume(node_id: int, api: ApiOption = DEFAULT_API) -> None:
    """Hand work to a drained node again."""
    _print_json_api(lambda c: c.resume_node(node_id), api)


@nodes_app.command("revoke")
def nodes_revoke(node_id: int, api: ApiOption = DEFAULT_API) -> None:
    """Revoke a node: its session ends, its key is refused from now on (it may join again
    only with a new key and the join token)."""
    _print_json_api(lambda c: c.revoke_node(node_id), api)


models_app = _listing_group(
    "models", help="List registered models with their worker settings; `models add`, "
    "`set` and `remove` change them.", listing=lambda c: c.models())

CpusOption = Annotated[float | None, typer.Option(
    min=0.01, help="CPU limit of each worker container.")]
MemoryOption = Annotated[int | None, typer.Option(
    min=64, help="Memory limit of each worker container, MiB.")]


@models_app.command("add")
def models_add(
    path: Annotated[Path, typer.Argument(help="The GGUF file, on the coordinator's disk.")],
    name: Annotated[str | None, typer.Option(
        help="Name to use in job specs (default: the file name without .gguf).")] = None,
    threads: Annotated[int, typer.Option(min=1, max=64)] = 2,
    n_ctx: Annotated[int, typer.Option(min=128)] = 2048,
    cpus: CpusOption = None,
    memory_mb: MemoryOption = None,
    api: ApiOption = DEFAULT_API,
) -> None:
    """Register a GGUF model; every node then fetches it and starts a worker."""
    model_name = name or path.name.removesuffix(".gguf")
    _print_json_api(lambda c: c.add_model(
        name=model_name, path=str(path.resolve()), threads=threads, n_ctx=n_ctx, cpus=cpus,
        memory_mb=memory_mb), api)


@models_app.command("set")
def models_set(
    name: str,
    threads: Annotated[int | None, typer.Option(min=1, max=64)] = None,
    n_ctx: Annotated[int | None, typer.Option(min=128)] = None,
    cpus: CpusOption = None,
    memory_mb: MemoryOption = None,
    api: ApiOption = DEFAULT_API,
) -> None:
    """Change a model's worker settings; agents replace its workers to match."""
    changes = {k: v for k, v in {"threads": threads, "n_ctx": n_ctx, "cpus": cpus,
                                 "memory_mb": memory_mb}.items() if v is not None}
    if not changes:
        raise _fail("nothing to change: give --threads, --n-ctx, --cpus or --memory-mb", 2)
    _print_json_api(lambda c: c.update_model(name, **changes), api)


@models_app.command("remove")
def models_remove(name: str, api: ApiOption = DEFAULT_API) -> None:
    """Unregister a model; agents stop its workers (refused while a running job uses it)."""
    _print_json_api(lambda c: c.remove_model(name), api)


@app.command()
def topology(
    plan: Annotated[int, typer.Option("--plan", min=0, help="Number of nodes N.")],
    fanout: Annotated[int, typer.Option(min=1, help="Fan-out k.")] = 2,
    as_json: Annotated[bool, typer.Option("--json", help="Print the JSON snapshot.")] = False,
    svg: Annotated[Path | None, typer.Option(help="Also write the overlay as SVG here.")
                   ] = None,
) -> None:
    """Plan the overlay offline for N nodes and fan-out k: edges and stats."""
    from topology import Overlay

    overlay = Overlay(nodes=plan, fanout=fanout)
    if svg is not None:
        svg.write_text(overlay.svg())
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
