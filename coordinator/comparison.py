"""Comparing two jobs item by item: the paired-bootstrap difference of every metric.

Items are paired by (task, dataset, item, repeat), so both jobs must have run the same
data (the dataset reference includes its sha256). Within a task each job must have run
exactly one model — that is the comparison a regression gate makes (a new model, a new
quantization, new hardware) — and only items finished in both jobs count.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict
from typing import Any

from coordinator import store as st
from coordinator.compare import CompareError, Delta
from coordinator.db import WorkItemRow
from coordinator.evaluation.stats import paired_bootstrap
from coordinator.evaluation.tasks import get_task, metric_info
from coordinator.results import scored

Key = tuple[str, str, int]  # dataset, item_key, repeat


def _by_task(store: st.Store, job_id: int) -> dict[str, dict[Key, WorkItemRow]]:
    tasks: dict[str, dict[Key, WorkItemRow]] = defaultdict(dict)
    models: dict[str, set[str]] = defaultdict(set)
    for item in st.job_items(store, job_id=job_id):
        models[item.task].add(item.model)
        if item.status == "done":
            tasks[item.task][(item.dataset, item.item_key, item.repeat)] = item
    for task, names in models.items():
        if len(names) > 1:
            raise CompareError(f"job {job_id} ran {len(names)} models on {task} "
                               f"({', '.join(sorted(names))}); compare jobs that ran one "
                               "model per task")
    return tasks


def compare_jobs(store: st.Store, *, base: int, candidate: int, seed: int = 0,
                 resamples: int = 1000) -> dict[str, Any]:
    """Deltas (candidate − base) with 95% intervals, per task and metric, on paired items."""
    base_tasks, cand_tasks = _by_task(store, base), _by_task(store, candidate)
    deltas: list[Delta] = []
    paired: dict[str, int] = {}
    for task_name in sorted(set(base_tasks) & set(cand_tasks)):
        keys = sorted(set(base_tasks[task_name]) & set(cand_tasks[task_name]))
        paired[task_name] = len(keys)
        if len(keys) < 2:
            continue
        task = get_task(task_name)
        differences = paired_bootstrap(
            scored([base_tasks[task_name][k] for k in keys]),
            scored([cand_tasks[task_name][k] for k in keys]),
            task.aggregate, resamples=resamples, seed=seed)
        deltas += [Delta(task=task_name, metric=name, delta=d.delta, low=d.low, high=d.high,
                         higher_is_better=metric_info(task_name, name).higher_is_better)
                   for name, d in sorted(differences.items())]
    if not deltas:
        raise CompareError(f"jobs {base} and {candidate} share no task with at least two "
                           "items finished in both; compare jobs run on the same datasets")
    return {"base": base, "candidate": candidate, "paired_items": paired,
            "deltas": [asdict(d) for d in deltas]}
