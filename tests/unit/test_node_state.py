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
    assert state(silent_s=29.0) == "unreachable"  # dead only after 30 intervals


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


def full(**changes: Any) -> str:
    args: dict[str, Any] = {"last_seen": NOW, "now": NOW, "left": False, "interval_s": 1.0,
                            "liveness": 3, "workers": [], "reported": True,
                            "draining": False, "revoked": False}
    args.update(changes)
    return node_state(**args)


def test_a_node_that_has_not_reported_yet_is_joining() -> None:
    assert full(reported=False) == "joining"
    assert full(reported=False, last_seen=NOW - timedelta(seconds=5)) == "unreachable"


def test_a_draining_node_stays_draining_while_it_finishes_its_work() -> None:
    assert full(draining=True) == "draining"
    assert full(draining=True, workers=[{"state": "busy"}]) == "draining"
    assert full(draining=True, last_seen=NOW - timedelta(seconds=4)) == "unreachable"


def test_silent_for_thirty_intervals_is_dead() -> None:
    assert full(last_seen=NOW - timedelta(seconds=29.9)) == "unreachable"
    assert full(last_seen=NOW - timedelta(seconds=30)) == "dead"
    assert full(last_seen=NOW - timedelta(seconds=60), interval_s=2.0) == "dead"


def test_revoked_wins_over_everything_then_left() -> None:
    assert full(revoked=True, left=True, draining=True) == "revoked"
    assert full(left=True, last_seen=NOW - timedelta(days=1)) == "left"
