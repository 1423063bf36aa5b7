"""The status page: one server-rendered HTML page with node health and job progress.

It refreshes itself every few seconds; it is plain HTML (no scripts needed) so it
works in any browser on the lab network.
"""

from __future__ import annotations

from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape

_ENV = Environment(loader=PackageLoader("coordinator", "templates"),
                   autoescape=select_autoescape(["html"]))


def render_status_page(*, nodes: list[dict[str, Any]], jobs: list[dict[str, Any]],
                       refresh_s: int = 3) -> str:
    return _ENV.get_template("status.html").render(nodes=nodes, jobs=jobs,
                                                   refresh_s=refresh_s)
