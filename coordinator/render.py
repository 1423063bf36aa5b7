"""Terminal rendering of results: the quality + cost table a lab operator reads first."""

from __future__ import annotations

from typing import Any

from rich.table import Table

COLUMNS: tuple[tuple[str, str, str], ...] = (
    # key, header, format
    ("accuracy", "accuracy", "{:.3f}"),
    ("macro_f1", "macro-F1", "{:.3f}"),
    ("invalid_rate", "invalid", "{:.3f}"),
    ("ttft_p50_s", "TTFT p50 s", "{:.3f}"),
    ("tpot_p50_s", "TPOT p50 s", "{:.4f}"),
    ("e2e_p50_s", "E2E p50 s", "{:.3f}"),
    ("e2e_p95_s", "E2E p95 s", "{:.3f}"),
    ("tokens_per_s", "tok/s", "{:.1f}"),
    ("peak_rss_mb", "peak MiB", "{:.0f}"),
)


def _fmt(value: Any, pattern: str) -> str:
    return "–" if value is None else pattern.format(value)


def results_table(rows: list[dict[str, Any]], *, title: str) -> Table:
    by_node = any("node" in r for r in rows)
    table = Table(title=title)
    for header in ("model", "task", *(("node",) if by_node else ()), "done"):
        table.add_column(header)
    for _key, header, _ in COLUMNS:
        table.add_column(header, justify="right")
    for row in rows:
        head = [row["model"], row["task"], *((row["node"],) if by_node else ()),
                f"{row['done']}/{row['items']}"]
        table.add_row(*head, *(_fmt(row.get(k), f) for k, _, f in COLUMNS))
    return table
