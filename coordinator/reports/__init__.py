"""Reports of a finished job: terminal tables, CSV/JSON/LaTeX text, PNG plots, an HTML page.

Every renderer takes the same plain-data report dict the coordinator builds: `job`,
`summary` (one row per model × task with `metrics` and cost columns), `by_node` (same rows
plus `node`) and `items`. Any value may be None (not measured); metric names are read
from the data, never assumed.
"""

from coordinator.reports.formats import FORMATS, node_table, render_table, render_text
from coordinator.reports.html import render_html, self_contained_html, write_html
from coordinator.reports.plots import write_plots

__all__ = ["FORMATS", "node_table", "render_html", "render_table", "render_text",
           "self_contained_html", "write_html", "write_plots"]
