"""PNG plots of a report: quality against speed (Pareto), latency spread, metric bars.

Figures are drawn with matplotlib's Agg canvas directly (no pyplot, no window, no global
state). A plot whose data is missing is skipped; `write_plots` returns only what it wrote.
File names are stable: `pareto-<task>.png`, `latency-e2e.png`, `metrics-<task>.png`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from coordinator.reports.formats import metric_heads, rows_by_task

DPI = 110
FRONT_COLOUR = "#c2410c"
POINT_COLOUR = "#1d4ed8"


@dataclass(frozen=True)
class Estimate:
    """One metric value of one model, with its interval when it was computed."""

    model: str
    value: float
    low: float | None
    high: float | None


def slug(name: str) -> str:
    """A file-name-safe form of a task or metric name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "unnamed"


def _number(value: Any) -> float | None:
    """A finite float, or None for a missing, non-numeric or non-finite value."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _estimates(rows: Sequence[Mapping[str, Any]], metric: str) -> list[Estimate]:
    out = []
    for row in rows:
        m = (row.get("metrics") or {}).get(metric) or {}
        value = _number(m.get("value"))
        if value is not None:
            out.append(Estimate(str(row["model"]), value, _number(m.get("low")),
                                _number(m.get("high"))))
    return out


def _yerr(points: Sequence[Estimate]) -> list[list[float]]:
    """Asymmetric error bars; zero where the interval is missing."""
    return [[max(0.0, p.value - p.low) if p.low is not None else 0.0 for p in points],
            [max(0.0, p.high - p.value) if p.high is not None else 0.0 for p in points]]


def pareto_front(points: Sequence[tuple[float, float]], *, higher_is_better: bool) -> list[int]:
    """Indices of the points no other point beats on both speed (x, higher is better) and
    quality (y), sorted by x."""
    sign = 1.0 if higher_is_better else -1.0
    front = []
    for i, (x, y) in enumerate(points):
        dominated = any(
            qx >= x and sign * qy >= sign * y and (qx > x or sign * qy > sign * y)
            for j, (qx, qy) in enumerate(points) if j != i)
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=DPI)
    return path


def _pareto(task: str, rows: Sequence[Mapping[str, Any]], out_dir: Path) -> Path | None:
    heads = metric_heads(rows)
    if not heads:
        return None
    metric, higher_is_better = heads[0]
    speed = {str(r["model"]): _number(r.get("tokens_per_s")) for r in rows}
    pts = [p for p in _estimates(rows, metric) if speed.get(p.model) is not None]
    if not pts:
        return None
    xs = [speed[p.model] or 0.0 for p in pts]
    fig = Figure(figsize=(7, 4.8), layout="constrained")
    ax = fig.add_subplot()
    ax.errorbar(xs, [p.value for p in pts], yerr=_yerr(pts), fmt="o", color=POINT_COLOUR,
                ecolor="#94a3b8", capsize=4, label="model (95% CI)")
    front = pareto_front(list(zip(xs, [p.value for p in pts], strict=True)),
                         higher_is_better=higher_is_better)
    ax.plot([xs[i] for i in front], [pts[i].value for i in front], "-o", color=FRONT_COLOUR,
            markersize=9, markerfacecolor="none", linewidth=1.5, label="Pareto front")
    for x, p in zip(xs, pts, strict=True):
        ax.annotate(p.model, (x, p.value), textcoords="offset points", xytext=(6, 6),
                    fontsize=8)
    better = "higher" if higher_is_better else "lower"
    ax.set_xlabel("tokens/s (higher is better)")
    ax.set_ylabel(f"{metric} ({better} is better)")
    ax.set_title(f"{task}: {metric} vs speed")
    ax.grid(True, alpha=0.3)
    ax.margins(x=0.25, y=0.12)
    ax.legend(loc="best", fontsize=8)
    return _save(fig, out_dir / f"pareto-{slug(task)}.png")


def _latency(items: Sequence[Mapping[str, Any]], out_dir: Path) -> Path | None:
    groups: dict[str, list[float]] = {}
    for item in items:
        e2e = _number(item.get("e2e_s"))
        if e2e is not None and item.get("status", "done") == "done":
            groups.setdefault(f"{item.get('model')} · {item.get('task')}", []).append(e2e)
    if not groups:
        return None
    labels = sorted(groups)
    fig = Figure(figsize=(8, 1.2 + 0.45 * len(labels)), layout="constrained")
    ax = fig.add_subplot()
    ax.boxplot([groups[k] for k in labels], tick_labels=labels, orientation="horizontal")
    ax.invert_yaxis()
    ax.set_xlabel("end-to-end latency per item (s)")
    ax.set_title("Latency distribution per model × task (done items)")
    ax.grid(True, axis="x", alpha=0.3)
    return _save(fig, out_dir / "latency-e2e.png")


def _metric_bars(task: str, rows: Sequence[Mapping[str, Any]], out_dir: Path) -> Path | None:
    panels = [(name, hib, est) for name, hib in metric_heads(rows)
              if (est := _estimates(rows, name))]
    if not panels:
        return None
    models = list(dict.fromkeys(str(r["model"]) for r in rows))
    cols = min(3, len(panels))
    nrows = math.ceil(len(panels) / cols)
    fig = Figure(figsize=(4.2 * cols, 0.6 + 3.4 * nrows), layout="constrained")
    fig.suptitle(f"{task}: metrics with 95% CI")
    for k, (name, hib, est) in enumerate(panels):
        ax = fig.add_subplot(nrows, cols, k + 1)
        ax.bar([models.index(p.model) for p in est], [p.value for p in est], yerr=_yerr(est),
               capsize=4, color=POINT_COLOUR, alpha=0.8)
        for i in set(range(len(models))) - {models.index(p.model) for p in est}:
            ax.text(i, 0, "not measured", ha="center", va="bottom", fontsize=8, color="#777")
        ax.set_xlim(-0.6, len(models) - 0.4)
        ax.set_xticks(range(len(models)), models, rotation=20, ha="right", fontsize=8)
        ax.set_title(f"{name} ({'higher' if hib else 'lower'} is better)", fontsize=9)
        ax.grid(True, axis="y", alpha=0.3)
    return _save(fig, out_dir / f"metrics-{slug(task)}.png")


def write_plots(report: Mapping[str, Any], out_dir: Path) -> list[Path]:
    """Write every plot the report has data for into out_dir; return the files written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path | None] = []
    by_task = rows_by_task(report.get("summary") or [])
    written += [_pareto(task, rows, out_dir) for task, rows in by_task.items()]
    written.append(_latency(report.get("items") or [], out_dir))
    written += [_metric_bars(task, rows, out_dir) for task, rows in by_task.items()]
    return [p for p in written if p is not None]
