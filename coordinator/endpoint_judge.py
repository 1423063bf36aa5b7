"""Judging through an OpenAI-compatible endpoint: the coordinator works the judge job itself.

A judge job whose judge is an endpoint has work items for the model `endpoint:NAME`,
which no agent hosts; a runner thread on the coordinator leases them like a node would,
asks the endpoint's `/completions` for each, and records the answer through the same
exactly-once path. An API key is only ever named by an environment variable, never
stored. A restarted coordinator resumes running endpoint jobs.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx

from coordinator import store as st
from coordinator.evaluation.tasks import get_task

log = logging.getLogger("slmfleet.endpoint_judge")

MODEL_PREFIX = "endpoint:"
COORDINATOR_NODE = 0  # the coordinator is the overlay's root, node 0


@dataclass(frozen=True)
class Endpoint:
    url: str  # the API base, e.g. http://127.0.0.1:8000/v1
    model: str
    api_key_env: str | None = None
    timeout_s: float = 60.0
    attempts: int = 3

    @property
    def work_model(self) -> str:
        return MODEL_PREFIX + self.model


def ask(endpoint: Endpoint, prompt: str, *, max_tokens: int, stop: list[str],
        client: httpx.Client) -> tuple[str, dict[str, Any]]:
    """The endpoint's completion of `prompt` and its cost; retries with backoff, then raises."""
    headers = {}
    if endpoint.api_key_env:
        key = os.environ.get(endpoint.api_key_env)
        if not key:
            raise RuntimeError(f"the judge endpoint's key variable {endpoint.api_key_env} is "
                               "not set on the coordinator")
        headers["Authorization"] = f"Bearer {key}"
    body = {"model": endpoint.model, "prompt": prompt, "max_tokens": max_tokens,
            "temperature": 0.0, "stop": stop or None}
    for attempt in range(endpoint.attempts):
        started = time.perf_counter()
        try:
            response = client.post(endpoint.url.rstrip("/") + "/completions", json=body,
                                   headers=headers, timeout=endpoint.timeout_s)
            if response.status_code < 500:
                response.raise_for_status()
                reply = response.json()
                usage = reply.get("usage") or {}
                elapsed = time.perf_counter() - started
                return str(reply["choices"][0]["text"]), {
                    "e2e_s": elapsed, "ttft_s": elapsed, "tpot_s": 0.0,
                    "prompt_tokens": int(usage.get("prompt_tokens", 0)),
                    "completion_tokens": int(usage.get("completion_tokens", 0)),
                    "tokens_per_s": 0.0, "peak_rss_mb": 0.0}
            problem = f"HTTP {response.status_code}"
        except httpx.TransportError as exc:
            problem = f"{type(exc).__name__}: {exc}"
        if attempt + 1 < endpoint.attempts:
            time.sleep(min(8.0, 0.5 * 2 ** attempt))
    raise RuntimeError(f"the judge endpoint {endpoint.url} did not answer after "
                       f"{endpoint.attempts} attempts ({problem})")


def run(store: st.Store, endpoint: Endpoint, *, lease_s: float = 300.0) -> int:
    """Work every pending item for this endpoint; the number of results recorded."""
    task = get_task("rag_judge")
    recorded = 0
    with httpx.Client() as client:
        while (item := st.lease_next(store, model=endpoint.work_model,
                                     node_id=COORDINATOR_NODE, lease_s=lease_s)) is not None:
            try:
                text, measured = ask(endpoint, item.prompt, client=client,
                                     max_tokens=int(item.params["max_tokens"]),
                                     stop=list(item.params["stop"]))
                error = None
            except (RuntimeError, httpx.HTTPError, KeyError, ValueError) as exc:
                text, measured, error = "", {}, str(exc)
                log.warning("judge item %d: %s", item.id, error)
            st.complete_item(store, item_id=item.id, lease_id=item.lease_id or "",
                             node_id=COORDINATOR_NODE, output=text,
                             measurement=measured or None, error=error,
                             scorer=lambda row, out: task.score_item(out, row.reference))
            recorded += error is None
    return recorded


def start(store: st.Store, endpoint: Endpoint) -> threading.Thread:
    """Run the endpoint's pending items in a background thread."""
    thread = threading.Thread(target=run, args=(store, endpoint), daemon=True,
                              name=f"judge {endpoint.model}")
    thread.start()
    return thread


def resume(store: st.Store) -> list[threading.Thread]:
    """Restart the runners of running endpoint judge jobs (after a coordinator restart)."""
    st.requeue_node_leases(store, node_id=COORDINATOR_NODE)  # held by the last process
    endpoints = {Endpoint(**job.spec["endpoint"]) for job in st.list_jobs(store)
                 if job.state == "running" and job.spec.get("endpoint")}
    return [start(store, endpoint) for endpoint in endpoints]
