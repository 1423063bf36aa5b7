"""Text renderings of a finished job's report: terminal tables, CSV, JSON, LaTeX and HTML.

A report is plain data (see `coordinator.reports`): per (model, task) a dict of quality
metrics with bootstrap intervals, plus the cost columns every row shares. Metric names
are never hard-coded here; each task's columns are whatever metrics its rows carry.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.table import Table

FORMATS = ("table", "csv", "json", "latex", "html")

COST_COLUMNS: tuple[tuple[str, str, str], ...] = (
    # key in a summary row, header, number format
    ("ttft_p50_s", "TTFT p50 s", "{:.3f}"),
    ("ttft_p95_s", "TTFT p95 s", "{:.3f}"),
    ("tpot_p50_s", "TPOT p50 s", "{:.4f}"),
    ("tpot_p95_s", "TPOT p95 s", "{:.4f}"),
    ("e2e_p50_s", "E2E p50 s", "{:.3f}"),
    ("e2e_p95_s", "E2E p95 s", "{:.3f}"),
    ("tokens_per_s", "tok/s", "{:.1f}"),
    ("peak_rss_mb", "peak RSS MiB", "{:.0f}"),
)
MISSING = "–"

Row = Mapping[str, Any]


@dataclass(frozen=True)
class Grid:
    """One table as strings: a title, a header and rows of cells, ready for any renderer."""

    title: str
    header: list[str]
    rows: list[list[str]]


def rows_by_task(rows: Sequence[Row]) -> dict[str, list[Row]]:
    """Group summary rows by task, tasks and models in the order the report lists them."""
    grouped: dict[str, list[Row]] = {}
    for row in rows:
        grouped.setdefault(str(row["task"]), []).append(row)
    return grouped


def metric_heads(rows: Sequence[Row]) -> list[tuple[str, bool]]:
    """The metrics these rows carry, first-seen order, with higher_is_better (default True)."""
    heads: dict[str, bool | None] = {}
    for row in rows:
        for name, metric in (row.get("metrics") or {}).items():
            if heads.get(name) is None:
                heads[name] = (metric or {}).get("higher_is_better")
    return [(name, True if hib is None else bool(hib)) for name, hib in heads.items()]


def quality_cell(metric: Mapping[str, Any] | None) -> str:
    """`0.550 [0.33, 0.75]`; the interval is left out when it was not computed."""
    metric = metric or {}
    value, low, high = metric.get("value"), metric.get("low"), metric.get("high")
    if value is None:
        return MISSING
    if low is None or high is None:
        return f"{value:.3f}"
    return f"{value:.3f} [{low:.2f}, {high:.2f}]"


def cost_cell(row: Row, key: str, pattern: str) -> str:
    value = row.get(key)
    return MISSING if value is None else pattern.format(value)


def done_cell(row: Row) -> str:
    failed = row.get("failed") or 0
    text = f"{row.get('done', 0)}/{row.get('items', 0)}"
    return f"{text} ({failed} failed)" if failed else text


def arrow(higher_is_better: bool) -> str:
    return "↑" if higher_is_better else "↓"


def _body(rows: Sequence[Row], heads: Sequence[tuple[str, bool]]) -> list[list[str]]:
    return [[str(row["model"]), done_cell(row),
             *(quality_cell((row.get("metrics") or {}).get(name)) for name, _ in heads),
             *(cost_cell(row, key, pattern) for key, _, pattern in COST_COLUMNS)]
            for row in rows]


def task_grids(report: Mapping[str, Any]) -> list[Grid]:
    """One grid per task: model, done, each metric with its interval, then the cost columns."""
    grids = []
    for task, rows in rows_by_task(report.get("summary") or []).items():
        heads = metric_heads(rows)
        header = ["model", "done", *(f"{name} {arrow(hib)}" for name, hib in heads),
                  *(h for _, h, _ in COST_COLUMNS)]
        grids.append(Grid(title=task, header=header, rows=_body(rows, heads)))
    return grids


def node_grid(report: Mapping[str, Any]) -> Grid:
    """The per-node cost table: one row per (model, task, node)."""
    header = ["model", "task", "node", "done", *(h for _, h, _ in COST_COLUMNS)]
    body = [[str(row["model"]), str(row["task"]), str(row.get("node", MISSING)), done_cell(row),
             *(cost_cell(row, key, pattern) for key, _, pattern in COST_COLUMNS)]
            for row in report.get("by_node") or []]
    return Grid(title="per node", header=header, rows=body)


def _table(grid: Grid, *, title: str, left: int) -> Table:
    table = Table(title=title)
    for i, header in enumerate(grid.header):
        table.add_column(header, justify="left" if i < left else "right")
    for cells in grid.rows:
        table.add_row(*cells)
    return table


def _transposed(grid: Grid) -> Grid:
    """Rows become columns: one row per metric or cost, one column per model.

    A task has many metrics and cost figures but few models, so this fits a terminal of
    80 columns where the wide layout would crush every cell.
    """
    header = [grid.header[0], *(cells[0] for cells in grid.rows)]
    rows = [[name, *(cells[i] for cells in grid.rows)]
            for i, name in enumerate(grid.header) if i > 0]
    return Grid(title=grid.title, header=header, rows=rows)


def render_table(report: Mapping[str, Any]) -> list[Table]:
    """One rich Table per task, for the terminal: a row per metric, a column per model."""
    return [_table(_transposed(grid), title=f"task: {grid.title}", left=1)
            for grid in task_grids(report)]


TERMINAL_NODE_COSTS = ("TTFT p50 s", "E2E p50 s", "E2E p95 s", "tok/s", "peak RSS MiB")


def node_table(report: Mapping[str, Any]) -> Table:
    """The per-node cost table for an 80-column terminal: the key figures only (the HTML,
    CSV and JSON reports have them all), and the model column only with several models."""
    grid = node_grid(report)
    several_models = len({cells[0] for cells in grid.rows}) > 1
    keep = [i for i, name in enumerate(grid.header)
            if name in ("task", "node", "done", *TERMINAL_NODE_COSTS)
            or (name == "model" and several_models)]
    narrow = Grid(title=grid.title, header=[grid.header[i] for i in keep],
                  rows=[[cells[i] for i in keep] for cells in grid.rows])
    return _table(narrow, title="cost per node", left=3 if several_models else 2)


def render_text(report: Mapping[str, Any], fmt: str) -> str:
    """The report as text in `fmt`, one of FORMATS.

    "table" is the terminal tables without colour; "html" is the page without its plots
    (plots need a directory: use `write_html`).
    """
    if fmt == "table":
        out = io.StringIO()
        console = Console(file=out, width=120, color_system=None)
        for table in render_table(report):
            console.print(table)
        return out.getvalue()
    if fmt == "csv":
        return _csv(report)
    if fmt == "json":
        return json.dumps(report, indent=2, sort_keys=True) + "\n"
    if fmt == "latex":
        return _latex(report)
    if fmt == "html":
        from coordinator.reports.html import render_html  # html builds on this module

        return render_html(report)
    raise ValueError(f"unknown report format {fmt!r}: expected one of {', '.join(FORMATS)}")


CSV_HEADER = ("model", "task", "items", "done", "failed", "metric", "value", "low", "high",
              "higher_is_better", *(key for key, _, _ in COST_COLUMNS))


def _csv(report: Mapping[str, Any]) -> str:
    """Tidy long format: one line per (model, task, metric); a row without metrics keeps
    one line with an empty metric so its cost is not lost. None becomes an empty cell."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    for row in report.get("summary") or []:
        head = [row["model"], row["task"], row.get("items"), row.get("done"), row.get("failed")]
        cost = [row.get(key) for key, _, _ in COST_COLUMNS]
        metrics = row.get("metrics") or {}
        lines = [[name, m.get("value"), m.get("low"), m.get("high"),
                  m.get("higher_is_better")] for name, m in metrics.items()]
        for line in lines or [["", None, None, None, None]]:
            writer.writerow(["" if v is None else v for v in (*head, *line, *cost)])
    return out.getvalue()


_LATEX_SPECIALS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                   "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
                   "^": r"\textasciicircum{}", "<": r"\textless{}",
                   ">": r"\textgreater{}", "|": r"\textbar{}", MISSING: "--"}
_LATEX_RE = re.compile("|".join(re.escape(k) for k in _LATEX_SPECIALS))


def latex_escape(text: str) -> str:
    """Escape LaTeX's special characters so text prints as written."""
    return _LATEX_RE.sub(lambda m: _LATEX_SPECIALS[m.group(0)], text)


def _latex(report: Mapping[str, Any]) -> str:
    """A booktabs `tabular` per task, each in a `table` float; needs \\usepackage{booktabs}."""
    job = report.get("job") or {}
    title = latex_escape(f"{job.get('name', '')} (job {job.get('id', '?')})").replace("\n", " ")
    parts = [f"% slmfleet report {title}; needs \\usepackage{{booktabs}}"]
    for task, rows in rows_by_task(report.get("summary") or []).items():
        heads = metric_heads(rows)
        header = ["model", "done",
                  *(latex_escape(n) + (r" $\uparrow$" if hib else r" $\downarrow$")
                    for n, hib in heads),
                  *(latex_escape(h) for _, h, _ in COST_COLUMNS)]
        label = re.sub(r"[^A-Za-z0-9]+", "-", task).strip("-")
        lines = [r"\begin{table}[ht]", r"\centering",
                 rf"\caption{{Task: {latex_escape(task)}}}", rf"\label{{tab:{label}}}",
                 rf"\begin{{tabular}}{{ll{'r' * (len(header) - 2)}}}", r"\toprule",
                 " & ".join(header) + r" \\", r"\midrule"]
        lines += [" & ".join(latex_escape(c) for c in cells) + r" \\"
                  for cells in _body(rows, heads)]
        lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"
