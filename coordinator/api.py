"""The coordinator's HTTP API (FastAPI, JSON under /api/v1) and the status page at `/`.

Routes are thin: they validate the body, call the store or job service, and map our
errors to 4xx answers that name the problem. A bad body changes nothing.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Body, Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from coordinator import endpoint_judge
from coordinator import store as st
from coordinator.chat_template import read_chat_template
from coordinator.comparison import compare_jobs
from coordinator.datasets.loader import builtin_names, load_builtin, parse_dataset
from coordinator.db import utcnow
from coordinator.endpoint_judge import Endpoint
from coordinator.errors import (
    ConflictError,
    JobSpecError,
    ModelError,
    NotFoundError,
    SlmfleetError,
)
from coordinator.jobs import stored_dataset, submit_job, submit_judge_job
from coordinator.monitoring import CONTENT_TYPE, render_metrics
from coordinator.node_state import node_state
from coordinator.overlay_view import overlay_svg, overlay_view
from coordinator.reports import render_text, self_contained_html
from coordinator.results import item_record, job_report
from coordinator.status_page import render_status_page
from node_agent.model_store import GGUF_MAGIC, sha256_file

API = "/api/v1"


class ModelCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._-]+$")
    path: str = Field(min_length=1, description="GGUF file on the coordinator's disk")
    threads: int = Field(default=2, ge=1, le=64)
    n_ctx: int = Field(default=2048, ge=128, le=131072)
    cpus: float | None = Field(default=None, gt=0, le=64,
                               description="CPU limit of each worker container")
    memory_mb: int | None = Field(default=None, ge=64,
                                  description="memory limit of each worker container, MiB")


class ModelUpdate(BaseModel):
    """New worker settings for a model; agents replace its workers to match."""

    model_config = ConfigDict(extra="forbid")
    threads: int | None = Field(default=None, ge=1, le=64)
    n_ctx: int | None = Field(default=None, ge=128, le=131072)
    cpus: float | None = Field(default=None, gt=0, le=64)
    memory_mb: int | None = Field(default=None, ge=64)


class DatasetCreate(BaseModel):
    """A user dataset, sent inline so the coordinator needs no shared filesystem."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._-]+$")
    task: str = Field(min_length=1)
    format: Literal["jsonl", "csv", "text"] = "jsonl"
    content: str = Field(min_length=1, max_length=64 * 2**20)
    labels: dict[str, str] | None = None
    documents: str | None = Field(default=None, max_length=64 * 2**20,
                                  description="RAG: the document collection as JSONL")


class EndpointCreate(BaseModel):
    """An OpenAI-compatible API: its base URL, model name and the key's variable name."""

    model_config = ConfigDict(extra="forbid")
    url: str = Field(pattern=r"^https?://\S+$", description="e.g. http://127.0.0.1:8000/v1")
    model: str = Field(min_length=1, max_length=128)
    api_key_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
                                    description="name of the coordinator's environment "
                                    "variable holding the key (the key is never stored)")


class JudgeCreate(BaseModel):
    """The judge of a finished job's RAG answers: a registered model, or an endpoint."""

    model_config = ConfigDict(extra="forbid")
    model: str | None = Field(default=None, min_length=1, max_length=128)
    endpoint: EndpointCreate | None = None


class ReportError(SlmfleetError):
    """A report was asked for in a format that does not exist."""


def get_store(request: Request) -> st.Store:
    """The store of the app serving `request` (set by `create_app`)."""
    store: st.Store = request.app.state.store
    return store


# Module level on purpose: with `from __future__ import annotations` FastAPI resolves the
# route annotations in this module's globals, so an alias local to create_app is not found
# and the parameter silently becomes a required query parameter.
StoreDep = Annotated[st.Store, Depends(get_store)]


def create_app(*, store: st.Store, hub: Any = None) -> FastAPI:
    """The API over `store`; `hub` (optional) is told when the desired workers change."""
    app = FastAPI(title="slmfleet coordinator", version="0.1.0")
    app.state.store = store
    started = time.time()

    @app.exception_handler(SlmfleetError)
    async def _our_errors(_request: Request, exc: SlmfleetError) -> JSONResponse:
        code = 404 if isinstance(exc, NotFoundError) else \
            409 if isinstance(exc, ConflictError) else 422
        return JSONResponse(status_code=code, content={"detail": str(exc),
                                                       "error": type(exc).__name__})

    @app.get(f"{API}/health")
    def health(s: StoreDep) -> dict[str, Any]:
        return {"status": "ok", "uptime_s": round(time.time() - started, 1),
                "nodes": len(st.list_nodes(s)), "hub_port": getattr(hub, "port", None)}

    def node_view(node: Any) -> dict[str, Any]:
        return {"id": node.id, "name": node.name, "runtime": node.runtime,
                "facts": node.facts, "metrics": node.metrics, "workers": node.workers or [],
                "errors": node.errors or [], "public_key": node.public_key,
                "revoked": node.revoked_key is not None and node.public_key is None,
                "last_seen": node.last_seen.isoformat() + "Z",
                "draining": node.draining,
                "state": node_state(last_seen=node.last_seen, now=utcnow(), left=node.left,
                                    interval_s=getattr(hub, "interval_s", 1.0),
                                    liveness=getattr(hub, "liveness", 3),
                                    workers=node.workers or [],
                                    reported=node.metrics is not None,
                                    draining=node.draining,
                                    revoked=node.revoked_key is not None
                                    and node.public_key is None)}

    @app.get(f"{API}/nodes")
    def list_nodes(s: StoreDep) -> list[dict[str, Any]]:
        return [node_view(n) for n in st.list_nodes(s)]

    @app.get(f"{API}/nodes/{{node_id}}")
    def get_node(s: StoreDep, node_id: int) -> dict[str, Any]:
        for node in st.list_nodes(s):
            if node.id == node_id:
                return node_view(node)
        raise NotFoundError(f"no node with id {node_id}; list nodes with GET /api/v1/nodes")

    @app.get(f"{API}/topology", response_model=None)
    def topology(s: StoreDep, format: Literal["json", "svg"] = "json"
                 ) -> dict[str, Any] | Response:
        views = [node_view(n) for n in st.list_nodes(s)]
        fanout = getattr(hub, "fanout", 2)
        if format == "svg":
            return Response(overlay_svg(nodes=views, fanout=fanout),
                            media_type="image/svg+xml")
        routes = hub.routes() if hub is not None and hasattr(hub, "routes") else None
        return overlay_view(nodes=views, fanout=fanout, routes=routes,
                            origin_bytes_sent=getattr(hub, "origin_bytes_sent", None))

    def set_draining(s: st.Store, node_id: int, *, draining: bool) -> dict[str, Any]:
        node = st.set_draining(s, node_id=node_id, draining=draining)
        if hub is not None:  # the hub answers the node's work requests by this set
            (hub.draining.add if draining else hub.draining.discard)(node_id)
        return node_view(node)

    @app.post(f"{API}/nodes/{{node_id}}/drain")
    def drain_node(s: StoreDep, node_id: int) -> dict[str, Any]:
        return set_draining(s, node_id, draining=True)

    @app.post(f"{API}/nodes/{{node_id}}/resume")
    def resume_node(s: StoreDep, node_id: int) -> dict[str, Any]:
        return set_draining(s, node_id, draining=False)

    @app.post(f"{API}/nodes/{{node_id}}/revoke")
    async def revoke_node(s: StoreDep, node_id: int) -> dict[str, Any]:
        node = st.revoke_node(s, node_id=node_id)
        if hub is not None:
            await hub.revoke(node_id=node_id, key=node.revoked_key)
        return node_view(node)

    @app.get("/metrics")
    def metrics(s: StoreDep) -> Response:
        return Response(render_metrics(
            nodes=[node_view(n) for n in st.list_nodes(s)], counts=st.counts(s),
            discarded_results=s.discarded_results,
            rejected_messages=getattr(hub, "rejected_messages", 0),
            origin_bytes_sent=getattr(hub, "origin_bytes_sent", 0),
            backups_started=getattr(hub, "backups_started", 0),
            backups_cancelled=getattr(hub, "backups_cancelled", 0),
            leases_requeued=getattr(hub, "leases_requeued", 0)), media_type=CONTENT_TYPE)

    @app.get(f"{API}/models")
    def list_models(s: StoreDep) -> list[dict[str, Any]]:
        return [model_view(m) for m in st.list_models(s)]

    def model_view(m: Any) -> dict[str, Any]:
        return {"name": m.name, "sha256": m.sha256, "size": m.size, "threads": m.threads,
                "n_ctx": m.n_ctx, "cpus": m.cpus, "memory_mb": m.memory_mb,
                "chat_template": m.chat_template is not None}

    @app.patch(f"{API}/models/{{name}}")
    async def update_model(s: StoreDep, name: str, body: ModelUpdate) -> dict[str, Any]:
        changes = body.model_dump(exclude_unset=True)
        for key in ("threads", "n_ctx"):
            if key in changes and changes[key] is None:
                raise ModelError(f"{key}: give a number; only cpus and memory_mb can be "
                                 "lifted with null")
        row = st.update_model(s, name=name, changes=changes)
        if hub is not None:
            await hub.push_desired()
        return model_view(row)

    @app.delete(f"{API}/models/{{name}}")
    async def remove_model(s: StoreDep, name: str) -> dict[str, Any]:
        st.remove_model(s, name=name)
        if hub is not None:
            await hub.push_desired()
        return {"name": name, "removed": True}

    @app.post(f"{API}/models", status_code=201)
    async def add_model(s: StoreDep, body: ModelCreate) -> dict[str, Any]:
        path = Path(body.path).expanduser().resolve()
        if not path.is_file():
            raise ModelError(f"path: no file at {path}; give the GGUF file's path on the "
                             "coordinator")
        with path.open("rb") as handle:
            if handle.read(4) != GGUF_MAGIC:
                raise ModelError(f"path: {path} is not a GGUF file (missing 'GGUF' magic)")
        sha256 = await asyncio.to_thread(sha256_file, path)  # GBs: keep the hub responsive
        chat = await asyncio.to_thread(read_chat_template, path)
        row = st.add_model(s, name=body.name, sha256=sha256,
                           size=path.stat().st_size, path=str(path), threads=body.threads,
                           n_ctx=body.n_ctx, chat_template=chat, cpus=body.cpus,
                           memory_mb=body.memory_mb)
        if hub is not None:
            await hub.push_desired()
        return {"name": row.name, "sha256": row.sha256, "size": row.size,
                "chat_template": row.chat_template is not None}

    def job_view(s: st.Store, job: Any) -> dict[str, Any]:
        progress = st.job_progress(s, job_id=job.id)
        return {"id": job.id, "name": job.name, "state": job.state, "total": job.total,
                "done": progress.get("done", 0), "failed": progress.get("failed", 0),
                "leased": progress.get("leased", 0), "pending": progress.get("pending", 0),
                "cancelled": progress.get("cancelled", 0),
                "created_at": job.created_at.isoformat() + "Z", "spec": job.spec}

    @app.get(f"{API}/jobs")
    def list_jobs(s: StoreDep) -> list[dict[str, Any]]:
        return [job_view(s, j) for j in st.list_jobs(s)]

    @app.post(f"{API}/jobs", status_code=201)
    def create_job(s: StoreDep, body: Annotated[Any, Body()]) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise JobSpecError("the body must be a job spec object (JSON)")
        return job_view(s, submit_job(s, body))

    @app.post(f"{API}/jobs/{{job_id}}/judge", status_code=201)
    def judge_job(s: StoreDep, job_id: int, body: JudgeCreate) -> dict[str, Any]:
        endpoint = Endpoint(**body.endpoint.model_dump()) if body.endpoint else None
        job = submit_judge_job(s, job_id=job_id, model=body.model, endpoint=endpoint)
        if endpoint is not None:
            endpoint_judge.start(s, endpoint)
        return job_view(s, job)

    @app.post(f"{API}/jobs/{{job_id}}/cancel")
    def cancel_job(s: StoreDep, job_id: int) -> dict[str, Any]:
        return job_view(s, st.cancel_job(s, job_id=job_id))

    @app.get(f"{API}/jobs/{{job_id}}")
    def get_job(s: StoreDep, job_id: int) -> dict[str, Any]:
        return job_view(s, st.get_job(s, job_id=job_id))

    reports: dict[int, tuple[tuple[str, int, int], dict[str, Any]]] = {}

    def report_of(s: st.Store, job_id: int) -> dict[str, Any]:
        """The job's report, recomputed only when its progress changed (bootstrap is slow)."""
        job = st.get_job(s, job_id=job_id)
        progress = st.job_progress(s, job_id=job_id)
        version = (job.state, progress.get("done", 0), progress.get("failed", 0))
        cached = reports.get(job_id)
        if cached is None or cached[0] != version:
            reports[job_id] = (version, job_report(s, job_id=job_id))
        return reports[job_id][1]

    @app.get(f"{API}/jobs/{{job_id}}/results")
    def job_results(s: StoreDep, job_id: int) -> dict[str, Any]:
        return {**report_of(s, job_id),
                "records": [item_record(i) for i in st.job_items(s, job_id=job_id)]}

    @app.get(f"{API}/jobs/{{job_id}}/report")
    def job_report_route(s: StoreDep, job_id: int, format: str = "json") -> Response:
        report = report_of(s, job_id)
        if format == "html":
            return HTMLResponse(self_contained_html(report))
        if format == "json":
            return JSONResponse(report)
        try:
            text = render_text(report, format)
        except ValueError as exc:
            raise ReportError(f"format: {exc}") from None
        media = {"csv": "text/csv", "latex": "application/x-latex"}.get(format, "text/plain")
        return Response(text, media_type=f"{media}; charset=utf-8")

    @app.get(f"{API}/compare")
    def compare(s: StoreDep, base: int, candidate: int) -> dict[str, Any]:
        st.get_job(s, job_id=base)
        st.get_job(s, job_id=candidate)
        return compare_jobs(s, base=base, candidate=candidate)

    @app.get(f"{API}/datasets")
    def list_datasets(s: StoreDep) -> list[dict[str, Any]]:
        builtin = [load_builtin(name) for name in builtin_names()]
        return [*({"name": f"builtin:{d.name}", "task": d.task, "version": d.version,
                   "sha256": d.sha256, "items": len(d.split("test")), "builtin": True}
                  for d in builtin),
                *({"name": d.name, "task": d.task, "version": d.sha256[:12],
                   "sha256": d.sha256, "items": d.items, "builtin": False}
                  for d in st.list_datasets(s))]

    @app.post(f"{API}/datasets", status_code=201)
    def add_dataset(s: StoreDep, body: DatasetCreate) -> dict[str, Any]:
        content = body.content.encode()
        documents = body.documents.encode() if body.documents is not None else None
        dataset = parse_dataset(content, task=body.task, where=Path(f"dataset '{body.name}'"),
                                name=body.name, labels=body.labels, documents_raw=documents,
                                csv_format=body.format == "csv",
                                text_format=body.format == "text")
        tests = len(dataset.split("test"))
        row = st.add_dataset(s, name=body.name, task=body.task, sha256=dataset.sha256,
                             content=content, format=body.format,
                             documents=documents, labels=body.labels, items=tests)
        return {"name": row.name, "task": row.task, "sha256": row.sha256,
                "items": row.items, "ref": stored_dataset(row).ref}  # the ref results carry

    @app.get("/", response_class=HTMLResponse)
    def status_page(s: StoreDep) -> str:
        return render_status_page(nodes=[node_view(n) for n in st.list_nodes(s)],
                                  jobs=[job_view(s, j) for j in st.list_jobs(s)])

    return app
