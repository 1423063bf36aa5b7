"""The HTML report: one static page with the job header, per-task tables, plots, per-node costs.

`write_html` writes `report.html` and its PNG plots side by side, referenced by relative
file name, so the directory can be copied or served as it is. No scripts, no external URLs.
"""

from __future__ import annotations

import base64
import json
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape

from coordinator.reports.formats import node_grid, task_grids
from coordinator.reports.plots import write_plots

_ENV = Environment(loader=PackageLoader("coordinator", "templates"),
                   autoescape=select_autoescape(["html"]))

_CAPTIONS = {
    "pareto": "Quality vs speed; the Pareto front is highlighted",
    "latency": "End-to-end latency per item",
    "metrics": "Metrics with 95% confidence intervals",
}


def _caption(file_name: str) -> str:
    kind, _, rest = Path(file_name).stem.partition("-")
    text = _CAPTIONS.get(kind, kind)
    return f"{text} — {rest}" if rest and kind != "latency" else text


def render_html(report: Mapping[str, Any], *, images: Sequence[str] = (),
                sources: Mapping[str, str] | None = None) -> str:
    """The page as a string; `images` are file names relative to where the page is written.

    `sources` maps an image's file name to the `src` to use instead (e.g. a data URI).
    """
    job = dict(report.get("job") or {})
    spec = job.pop("spec", None)
    return _ENV.get_template("report.html").render(
        job=job,
        spec=None if spec is None else json.dumps(spec, indent=2, sort_keys=True, default=str),
        tasks=task_grids(report),
        nodes=node_grid(report),
        images=[{"src": (sources or {}).get(name, name), "caption": _caption(name)}
                for name in images],
    )


def write_html(report: Mapping[str, Any], out_dir: Path) -> Path:
    """Write report.html and its plots into out_dir (created if needed); return the page."""
    out_dir.mkdir(parents=True, exist_ok=True)
    images = [p.name for p in write_plots(report, out_dir)]
    page = out_dir / "report.html"
    page.write_text(render_html(report, images=images), encoding="utf-8")
    return page


def self_contained_html(report: Mapping[str, Any]) -> str:
    """The page with its plots inlined as data URIs: one response, nothing to fetch."""
    with tempfile.TemporaryDirectory(prefix="slmfleet-report-") as tmp:
        plots = write_plots(report, Path(tmp))
        sources = {p.name: "data:image/png;base64," + base64.b64encode(p.read_bytes()).decode()
                   for p in plots}
    return render_html(report, images=[p.name for p in plots], sources=sources)
