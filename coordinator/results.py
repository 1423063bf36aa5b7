"""Job results: per-item records and aggregates per (model, task, node).

Aggregates join quality (the task's metrics) with cost (latency percentiles, tokens/s,
peak memory) over the items that finished, so one row answers "how good, how fast".
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

from coordinator import store as st
from coordinator.db import NodeRow, WorkItemRow
from coordinator.evaluation.tasks import get_task

ITEM_FIELDS = ("id", "model", "task", "dataset", "item_key", "repeat", "status", "node_id",
               "output", "prediction", "score", "error", "ttft_s", "tpot_s", "e2e_s",
               "prompt_tokens", "completion_tokens", "tokens_per_s", "peak_rss_mb",
               "cpu_temp_c", "attempts")


def item_record(item: WorkItemRow) -> dict[str, Any]:
    record = {name: getattr(item, name) for name in ITEM_FIELDS}
    record["reference"] = item.reference
    return record


def _pct(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def _group_row(items: list[WorkItemRow]) -> dict[str, Any]:
    done = [i for i in items if i.status == "done"]
    task = get_task(items[0].task)
    quality = task.aggregate([(i.prediction, {**i.reference, **(i.score or {})})
                              for i in done]) if done else {}
    e2e = [i.e2e_s for i in done if i.e2e_s is not None]
    ttft = [i.ttft_s for i in done if i.ttft_s is not None]
    tpot = [i.tpot_s for i in done if i.tpot_s is not None and i.completion_tokens
            and i.completion_tokens > 1]
    tps = [i.tokens_per_s for i in done if i.tokens_per_s is not None]
    rss = [i.peak_rss_mb for i in done if i.peak_rss_mb is not None]
    return {
        "items": len(items), "done": len(done),
        "failed": sum(i.status == "failed" for i in items),
        **quality,
        "ttft_p50_s": _pct(ttft, 50), "ttft_p95_s": _pct(ttft, 95),
        "tpot_p50_s": _pct(tpot, 50), "e2e_p50_s": _pct(e2e, 50), "e2e_p95_s": _pct(e2e, 95),
        "tokens_per_s": float(np.mean(tps)) if tps else None,
        "peak_rss_mb": max(rss) if rss else None,
    }


def job_summary(store: st.Store, *, job_id: int, by_node: bool = False) -> list[dict[str, Any]]:
    """One row per (model, task[, node]) with quality and cost."""
    items = st.job_items(store, job_id=job_id)
    names = {n.id: n.name for n in st.list_nodes(store)}
    groups: dict[tuple[Any, ...], list[WorkItemRow]] = defaultdict(list)
    for item in items:
        key: tuple[Any, ...] = (item.model, item.task)
        if by_node:
            key += (names.get(item.node_id, "-") if item.node_id else "-",)
        groups[key].append(item)
    rows = []
    for key, members in sorted(groups.items(), key=lambda kv: tuple(map(str, kv[0]))):
        row: dict[str, Any] = {"model": key[0], "task": key[1]}
        if by_node:
            row["node"] = key[2]
        row.update(_group_row(members))
        rows.append(row)
    return rows


def node_name_map(nodes: list[NodeRow]) -> dict[int, str]:
    return {n.id: n.name for n in nodes}
