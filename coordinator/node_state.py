"""A node's state, derived from what the coordinator knows of it by a pure function.

    (register) ──▶ joining ──first status report──▶ ready ◀──▶ busy (a worker serves)
                                                      │
         operator: POST /nodes/{id}/drain ──────▶ draining (no new leases; the ones
                   POST /nodes/{id}/resume ◀──────        it holds finish)
                                                      │
     silent ≥ liveness × interval ──▶ unreachable ──silent ≥ dead_after──▶ dead
                                                      │
     (any state) ──"bye"──▶ left        (any state) ──revoke──▶ revoked

Precedence, highest first: revoked, left, dead, unreachable, draining, joining, busy,
ready. A node heard from again is judged afresh (an unreachable or dead node that comes
back registers again and is ready); `left` ends when it registers again; `draining` lasts
until the operator resumes the node, also across its reconnects.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal

NodeState = Literal["joining", "ready", "busy", "draining", "unreachable", "dead",
                    "revoked", "left"]

DEAD_AFTER_INTERVALS = 30  # silent this many heartbeat intervals: dead, not just unreachable


def node_state(*, last_seen: datetime, now: datetime, left: bool, interval_s: float,
               liveness: int, workers: Sequence[dict[str, Any]], reported: bool = True,
               draining: bool = False, revoked: bool = False) -> NodeState:
    """`reported`: the node has sent a status report since it registered."""
    if revoked:
        return "revoked"
    if left:
        return "left"
    silent_s = (now - last_seen).total_seconds()
    if silent_s >= interval_s * DEAD_AFTER_INTERVALS:
        return "dead"
    if silent_s >= interval_s * liveness:
        return "unreachable"
    if draining:
        return "draining"
    if not reported:
        return "joining"
    if any(w.get("state") == "busy" for w in workers):
        return "busy"
    return "ready"
