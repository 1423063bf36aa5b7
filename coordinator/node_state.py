"""A node's state, derived from its last heartbeat by a pure function.

    (register) ──▶ ready ◀──────── idle ──────── busy
                    │  ▲                          ▲
     silent for     │  │ heard from again         │ a worker is serving a request
     ≥ liveness ×   ▼  │                          │
     interval     unreachable               (any state) ──"bye"──▶ left

`busy` means at least one worker is serving a request; `left` is a node that said bye
(it becomes ready again when it registers). The fuller lifecycle of the design
(draining, dead, revoked) comes with the scheduler."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal

NodeState = Literal["ready", "busy", "unreachable", "left"]


def node_state(*, last_seen: datetime, now: datetime, left: bool, interval_s: float,
               liveness: int, workers: Sequence[dict[str, Any]]) -> NodeState:
    if left:
        return "left"
    if (now - last_seen).total_seconds() >= interval_s * liveness:
        return "unreachable"
    if any(w.get("state") == "busy" for w in workers):
        return "busy"
    return "ready"
