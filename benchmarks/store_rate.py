"""The store's share of dispatch and ingest: items/s through lease + record, per backend.

Every work item costs the coordinator one `lease_next` (a worker asks for work) and one
`complete_item` (its result is recorded), each its own transaction. This benchmark runs
that pair in one thread, back to back, for a job of `--items` items, on SQLite (WAL, a
file in a temporary directory) and on PostgreSQL (a fresh schema on the server of
`make postgres`), with a scorer that does nothing, so only the store is measured: not
ZeroMQ, not the hub's event loop, not scoring. It bounds the coordinator's dispatch +
ingest rate from above; the issue's target for the whole path is >= 2,000 items/s.

Run: `.venv/bin/python -m benchmarks.store_rate [--items 3000]` (PostgreSQL is skipped,
saying why, when its server cannot be reached).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from coordinator import store as st
from coordinator.db import WorkItemRow
from tests.support.postgres import _unreachable, fresh_schema

TARGET = 2000.0


def no_score(_item: WorkItemRow, output: str) -> tuple[str | None, dict[str, Any]]:
    return output, {}


def rate(url: str, *, items: int) -> float:
    """Items/s leased and recorded, one after the other, in one thread."""
    store = st.Store(url)
    try:
        st.create_job(store, name="rate", spec={}, items=[st.NewWorkItem(
            model="m", task="classification", dataset="d", item_key=str(i), repeat=0,
            prompt="p", reference={}, params={}) for i in range(items)])
        started = time.perf_counter()
        done = 0
        while (item := st.lease_next(store, model="m", node_id=1, lease_s=60)) is not None:
            assert item.lease_id is not None
            done += st.complete_item(store, item_id=item.id, lease_id=item.lease_id,
                                     node_id=1, output="x", measurement=None, error=None,
                                     scorer=no_score)
        elapsed = time.perf_counter() - started
        assert done == items, f"recorded {done} of {items}"
        return items / elapsed
    finally:
        store.close()


@contextmanager
def sqlite_url() -> Iterator[str]:
    with tempfile.TemporaryDirectory() as tmp:
        yield f"sqlite:///{Path(tmp) / 'rate.db'}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=3000)
    args = parser.parse_args()
    with sqlite_url() as url:
        sqlite = rate(url, items=args.items)
    print(f"sqlite:     {sqlite:7.0f} items/s lease + record ({sqlite / TARGET:.2f} x the "
          f"{TARGET:.0f}/s target for the whole path)")
    if (reason := _unreachable()) is not None:
        print(f"postgresql: skipped: {reason}")
        return
    with fresh_schema() as url:
        postgres = rate(url, items=args.items)
    print(f"postgresql: {postgres:7.0f} items/s lease + record ({postgres / TARGET:.2f} x the "
          f"target); sqlite / postgresql = {sqlite / postgres:.2f}")


if __name__ == "__main__":
    main()
