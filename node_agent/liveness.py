"""Liveness rules shared by agent and coordinator (Paranoid Pirate style), as pure functions.

A peer is alive while its last message is younger than `liveness × interval`;
reconnect attempts back off exponentially from 1 s, capped at 32 s, with jitter.
"""

from __future__ import annotations

import random


def peer_alive(*, last_seen: float, now: float, interval_s: float, liveness: int) -> bool:
    return now - last_seen < interval_s * liveness


def backoff_delay(attempt: int, *, base_s: float = 1.0, cap_s: float = 32.0,
                  jitter: float = 0.1, rng: random.Random | None = None) -> float:
    """Delay before reconnect attempt `attempt` (0-based): base·2^attempt, capped, ±jitter."""
    # clamp the exponent: 2**attempt as an int overflows float() after ~1024 attempts
    delay = min(cap_s, base_s * 2.0 ** min(max(0, attempt), 1000))
    spread = delay * jitter
    return max(0.0, delay + (rng or random).uniform(-spread, spread))
