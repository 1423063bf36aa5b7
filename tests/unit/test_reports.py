"""Report renderers on a realistic report: 2 models × 2 tasks, some values not measured."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path
from typing import Any

import pytest
from rich.table import Table

from coordinator.reports import FORMATS, render_table, render_text, write_html, write_plots
from coordinator.reports.formats import latex_escape
from coordinator.reports.plots import pareto_front

GEMMA = "gemma-3-270m-q4_k_m"
QWEN = "qwen2.5-0.5b-instruct-q4_k_m"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _metric(value: float | None, low: float | None = None, high: float | None = None,
            hib: bool = True) -> dict[str, Any]:
    return {"value": value, "low": low, "high": high, "higher_is_better": hib}


def _row(model: str, task: str, metrics: dict[str, Any], *, tps: float | None,
         rss: float | None, failed: int = 0) -> dict[str, Any]:
    return {"model": model, "task": task, "items": 20, "done": 20 - failed, "failed": failed,
            "metrics": metrics, "ttft_p50_s": 0.5, "ttft_p95_s": 0.9, "tpot_p50_s": 0.05,
            "tpot_p95_s": 0.07, "e2e_p50_s": 1.2, "e2e_p95_s": 3.0, "tokens_per_s": tps,
            "peak_rss_mb": rss}


def sample_report() -> dict[str, Any]:
    summary = [
        _row(GEMMA, "classification", {"accuracy": _metric(0.55, 0.33, 0.75),
                                       "macro_f1": _metric(0.41, 0.22, 0.6),
                                       "invalid_rate": _metric(0.1, 0.0, 0.25, hib=False)},
             tps=19.8, rss=None),
        _row(QWEN, "classification", {"accuracy": _metric(0.7, 0.5, 0.85),
                                      "macro_f1": _metric(None),
                                      "invalid_rate": _metric(0.05, 0.0, 0.15, hib=False)},
             tps=9.1, rss=780.0, failed=2),
        _row(GEMMA, "ner", {"f1_strict": _metric(0.31, 0.2, 0.42),
                            "f1_partial": _metric(0.45), "r_final": _metric(0.5, 0.4, 0.6)},
             tps=21.0, rss=430.0),
        _row(QWEN, "ner", {"f1_strict": _metric(0.48, 0.37, 0.6),
                           "f1_partial": _metric(0.6, 0.5, 0.7), "r_final": _metric(None)},
             tps=None, rss=790.0),
    ]
    by_node = [{**row, "node": node} for row in summary for node in ("local-1", "pi5-b")]
    items = []
    for i in range(40):
        model, task = (GEMMA, QWEN)[i % 2], ("classification", "ner")[(i // 2) % 2]
        failed = i in (7, 13)
        items.append({"id": i + 1, "model": model, "task": task, "node": "local-1",
                      "status": "failed" if failed else "done",
                      "ttft_s": None if failed else 0.4, "tpot_s": None if failed else 0.05,
                      "e2e_s": None if failed else 0.8 + (i % 7) * 0.3,
                      "completion_tokens": None if failed else 12,
                      "tokens_per_s": None if failed else 20.0 - i % 5,
                      "peak_rss_mb": None if failed else 410.0})
    return {"job": {"id": 3, "name": "pi5-baseline & <friends>", "state": "finished",
                    "created_at": "2025-05-01T10:00:00Z",
                    "spec": {"models": [GEMMA, QWEN], "tasks": ["classification", "ner"]}},
            "summary": summary, "by_node": by_node, "items": items}


def test_csv_is_one_row_per_model_task_metric() -> None:
    rows = list(csv.DictReader(io.StringIO(render_text(sample_report(), "csv"))))
    assert len(rows) == 12  # 2 models × 2 tasks × 3 metrics
    acc = next(r for r in rows if r["model"] == GEMMA and r["metric"] == "accuracy")
    assert (float(acc["value"]), float(acc["low"]), float(acc["high"])) == (0.55, 0.33, 0.75)
    assert acc["tokens_per_s"] == "19.8" and acc["peak_rss_mb"] == ""
    missing = next(r for r in rows if r["model"] == QWEN and r["metric"] == "macro_f1")
    assert missing["value"] == missing["low"] == ""
    assert next(r for r in rows if r["metric"] == "invalid_rate")["higher_is_better"] == "False"


def test_csv_keeps_the_cost_of_a_row_without_metrics() -> None:
    report = {"summary": [_row(GEMMA, "rag", {}, tps=5.0, rss=100.0)]}
    (row,) = csv.DictReader(io.StringIO(render_text(report, "csv")))
    assert row["metric"] == "" and row["tokens_per_s"] == "5.0"


def test_json_round_trips() -> None:
    report = sample_report()
    assert json.loads(render_text(report, "json")) == report


def test_latex_escapes_names_and_uses_booktabs() -> None:
    tex = render_text(sample_report(), "latex")
    assert tex.count(r"\toprule") == 2 and tex.count(r"\bottomrule") == 2
    assert r"gemma-3-270m-q4\_k\_m" in tex and "q4_k_m" not in tex
    assert r"macro\_f1 $\uparrow$" in tex and r"invalid\_rate $\downarrow$" in tex
    assert "0.550 [0.33, 0.75]" in tex
    assert r"pi5-baseline \& \textless{}friends\textgreater{}" in tex
    assert latex_escape("50% #1 a_b {x} $5 ~ ^ \\") == (
        r"50\% \#1 a\_b \{x\} \$5 \textasciitilde{} \textasciicircum{} \textbackslash{}")


def test_rich_tables_one_per_task_with_intervals() -> None:
    tables = render_table(sample_report())
    assert [t.title for t in tables] == ["task: classification", "task: ner"]
    assert all(isinstance(t, Table) for t in tables)
    text = render_text(sample_report(), "table")
    assert "0.550 [0.33, 0.75]" in text and "18/20 (2 failed)" in text
    assert "f1_strict" in text and "tok/s" in text


def test_unknown_format_names_the_formats() -> None:
    with pytest.raises(ValueError, match="table, csv, json, latex, html"):
        render_text(sample_report(), "xlsx")


def test_every_format_renders() -> None:
    for fmt in FORMATS:
        assert render_text(sample_report(), fmt).strip()


def test_html_page_references_png_files_that_exist(tmp_path: Path) -> None:
    page = write_html(sample_report(), tmp_path / "out")
    assert page == tmp_path / "out" / "report.html" and page.is_file()
    html = page.read_text()
    sources = re.findall(r'<img src="([^"]+)"', html)
    assert sorted(sources) == ["latency-e2e.png", "metrics-classification.png",
                               "metrics-ner.png", "pareto-classification.png", "pareto-ner.png"]
    for src in sources:
        assert (page.parent / src).read_bytes()[:8] == PNG_MAGIC
    assert "pi5-baseline &amp; &lt;friends&gt;" in html  # autoescaped
    assert "0.550 [0.33, 0.75]" in html and "pi5-b" in html
    assert "<script" not in html and "http" not in html


def test_plots_are_skipped_without_their_data(tmp_path: Path) -> None:
    report = sample_report()
    report["items"] = []
    names = {p.name for p in write_plots(report, tmp_path)}
    assert "latency-e2e.png" not in names and "pareto-ner.png" in names
    empty = {"job": {"id": 1}, "summary": [], "by_node": [], "items": []}
    assert write_plots(empty, tmp_path / "empty") == []
    assert (write_html(empty, tmp_path / "empty")).is_file()


def test_pareto_needs_speed_and_quality(tmp_path: Path) -> None:
    report = {"summary": [_row(GEMMA, "ner", {"f1_strict": _metric(None)}, tps=3.0, rss=1.0),
                          _row(QWEN, "ner", {"f1_strict": _metric(0.4)}, tps=None, rss=1.0)]}
    assert [p.name for p in write_plots(report, tmp_path)] == ["metrics-ner.png"]


def test_pareto_front_respects_direction() -> None:
    points = [(10.0, 0.5), (20.0, 0.4), (5.0, 0.6), (8.0, 0.45)]
    assert pareto_front(points, higher_is_better=True) == [2, 0, 1]
    assert pareto_front(points, higher_is_better=False) == [1]


def test_terminal_tables_put_models_in_columns_and_metrics_in_rows() -> None:
    tables = render_table(sample_report())
    classification = tables[0]
    headers = [str(column.header) for column in classification.columns]
    assert headers[0] == "model" and set(headers[1:]) == {GEMMA, QWEN}
    first_column = list(classification.columns[0].cells)
    assert "done" in first_column and "accuracy ↑" in first_column and "tok/s" in first_column


def test_terminal_node_table_keeps_the_model_column_only_for_several_models() -> None:
    from coordinator.reports import node_table

    report = sample_report()
    headers = [str(c.header) for c in node_table(report).columns]
    assert headers[:3] == ["model", "task", "node"] and "tok/s" in headers
    assert "TPOT p95 s" not in headers  # the terminal keeps the key figures only
    one_model = {**report, "by_node": [r for r in report["by_node"] if r["model"] == GEMMA]}
    assert [str(c.header) for c in node_table(one_model).columns][:2] == ["task", "node"]
