"""Job results: per-item records and the report that aggregates them per (model, task, node).

A report row joins quality (the task's metrics, each with a bootstrap 95% confidence
interval over the items) with cost (latency percentiles, tokens/s, peak memory) over the
items that finished, so one row answers "how good, how fast". Per-node rows carry point
estimates only: their groups are small, and a lab reads them for cost, not quality.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from coordinator import store as st
from coordinator.db import WorkItemRow
from coordinator.evaluation.stats import bootstrap
from coordinator.evaluation.tasks import Scored, get_task, metric_info

ITEM_FIELDS = ("id", "model", "task", "dataset", "item_key", "repeat", "status", "node_id",
               "output", "prediction", "score", "error", "ttft_s", "tpot_s", "e2e_s",
               "prompt_tokens", "completion_tokens", "tokens_per_s", "peak_rss_mb",
               "cpu_temp_c", "attempts")
COST_FIELDS = ("ttft_s", "tpot_s", "e2e_s", "completion_tokens", "tokens_per_s", "peak_rss_mb")
RESAMPLES = 1000


def item_record(item: WorkItemRow) -> dict[str, Any]:
    record = {name: getattr(item, name) for name in ITEM_FIELDS}
    record["reference"] = item.reference
    return record


def scored(items: Sequence[WorkItemRow]) -> list[Scored]:
    """The finished items of one task as its aggregation sees them."""
    return [Scored(prediction=i.prediction, reference=i.reference, score=i.score or {})
            for i in items if i.status == "done"]


def _pct(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def _cost(done: list[WorkItemRow]) -> dict[str, Any]:
    def values(name: str) -> list[float]:
        return [float(getattr(i, name)) for i in done if getattr(i, name) is not None]

    tpot = [float(i.tpot_s) for i in done if i.tpot_s is not None
            and (i.completion_tokens or 0) > 1]
    tps, rss = values("tokens_per_s"), values("peak_rss_mb")
    return {
        "ttft_p50_s": _pct(values("ttft_s"), 50), "ttft_p95_s": _pct(values("ttft_s"), 95),
        "tpot_p50_s": _pct(tpot, 50), "tpot_p95_s": _pct(tpot, 95),
        "e2e_p50_s": _pct(values("e2e_s"), 50), "e2e_p95_s": _pct(values("e2e_s"), 95),
        "tokens_per_s": float(np.mean(tps)) if tps else None,
        "peak_rss_mb": max(rss) if rss else None,
    }


def _quality(task_name: str, done: list[WorkItemRow], *, with_ci: bool, seed: int
             ) -> dict[str, dict[str, Any]]:
    task = get_task(task_name)
    items = scored(done)
    if not items:
        return {}
    rows: dict[str, tuple[float, float | None, float | None]]
    if with_ci:
        intervals = bootstrap(items, task.aggregate, resamples=RESAMPLES, seed=seed)
        rows = {name: (iv.estimate, iv.low, iv.high) for name, iv in intervals.items()}
    else:
        rows = {name: (value, None, None) for name, value in task.aggregate(items).items()}
    return {name: {"value": value, "low": low, "high": high,
                   "higher_is_better": metric_info(task_name, name).higher_is_better}
            for name, (value, low, high) in rows.items()}


def _row(key: dict[str, Any], members: list[WorkItemRow], *, with_ci: bool,
         seed: int) -> dict[str, Any]:
    done = [i for i in members if i.status == "done"]
    return {**key, "items": len(members), "done": len(done),
            "failed": sum(i.status == "failed" for i in members),
            "metrics": _quality(key["task"], done, with_ci=with_ci, seed=seed),
            **_cost(done)}


def job_report(store: st.Store, *, job_id: int, seed: int = 0) -> dict[str, Any]:
    """The whole report of a job: header, summary and per-node rows, per-item cost records."""
    job = st.get_job(store, job_id=job_id)
    items = st.job_items(store, job_id=job_id)
    names = {n.id: n.name for n in st.list_nodes(store)}
    groups: dict[tuple[str, str], list[WorkItemRow]] = defaultdict(list)
    node_groups: dict[tuple[str, str, str], list[WorkItemRow]] = defaultdict(list)
    for item in items:
        node = names.get(item.node_id, "-") if item.node_id else "-"
        groups[(item.model, item.task)].append(item)
        node_groups[(item.model, item.task, node)].append(item)
    return {
        "job": {"id": job.id, "name": job.name, "state": job.state,
                "created_at": job.created_at.isoformat() + "Z", "spec": job.spec},
        "summary": [_row({"model": m, "task": t}, members, with_ci=True, seed=seed)
                    for (m, t), members in sorted(groups.items())],
        "by_node": [_row({"model": m, "task": t, "node": n}, members, with_ci=False,
                         seed=seed)
                    for (m, t, n), members in sorted(node_groups.items())],
        "items": [{"id": i.id, "model": i.model, "task": i.task, "item_key": i.item_key,
                   "repeat": i.repeat, "status": i.status,
                   "node": names.get(i.node_id, "-") if i.node_id else "-",
                   **{name: getattr(i, name) for name in COST_FIELDS}} for i in items],
    }
