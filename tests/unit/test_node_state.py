"""Unit tests for deriving a node's state from its last heartbeat (a pure function)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from coordinator.node_state import node_state

NOW = datetime(2025, 6, 1, 12, 0, 0)


def state(*, silent_s: float, left: bool = False, workers: list[dict[str, Any]] | None = None,
          interval_s: float = 1.0, liveness: int = 3) -> str:
    return node_state(last_seen=NOW - timedelta(seconds=silent_s), now=NOW, left=left,
                      interval_s=interval_s, liveness=liveness, workers=workers or [])


def test_recently_heard_idle_node_is_ready() -> None:
    assert state(silent_s=0.0) == "ready"
    assert state(silent_s=2.999) == "ready"


def test_silent_for_liveness_times_interval_is_unreachable() -> None:
    assert state(silent_s=3.0) == "unreachable"
    assert state(silent_s=3600.0) == "unreachable"


def test_threshold_follows_interval_and_liveness() -> None:
    assert state(silent_s=4.0, interval_s=2.0, liveness=3) == "ready"
    assert state(silent_s=6.0, interval_s=2.0, liveness=3) == "unreachable"
    assert state(silent_s=4.0, interval_s=1.0, liveness=5) == "ready"


def test_busy_when_any_worker_is_busy() -> None:
    workers = [{"model": "a", "state": "ready"}, {"model": "b", "state": "busy"}]
    assert state(silent_s=1.0, workers=workers) == "busy"


def test_workers_that_are_not_busy_leave_the_node_ready() -> None:
    workers = [{"model": "a", "state": s} for s in ("ready", "starting", "downloading",
                                                     "failed")]
    assert state(silent_s=1.0, workers=workers) == "ready"
    assert state(silent_s=1.0, workers=[{"model": "no state reported"}]) == "ready"


def test_silence_wins_over_a_busy_worker() -> None:
    assert state(silent_s=10.0, workers=[{"state": "busy"}]) == "unreachable"


def test_left_wins_over_everything() -> None:
    assert state(silent_s=0.0, left=True) == "left"
    assert state(silent_s=10.0, left=True) == "left"
    assert state(silent_s=0.0, left=True, workers=[{"state": "busy"}]) == "left"


def test_clock_skew_last_seen_in_the_future_counts_as_alive() -> None:
    assert state(silent_s=-5.0) == "ready"
