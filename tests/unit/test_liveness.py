"""Unit tests for the liveness rules: when a peer counts as dead, and reconnect backoff."""

from __future__ import annotations

import random

import pytest

from node_agent.liveness import backoff_delay, peer_alive


def test_peer_alive_while_younger_than_liveness_times_interval() -> None:
    assert peer_alive(last_seen=100.0, now=100.0, interval_s=1.0, liveness=3)
    assert peer_alive(last_seen=100.0, now=102.75, interval_s=1.0, liveness=3)


def test_peer_dead_exactly_at_the_limit_and_after() -> None:
    assert not peer_alive(last_seen=100.0, now=103.0, interval_s=1.0, liveness=3)
    assert not peer_alive(last_seen=100.0, now=250.0, interval_s=1.0, liveness=3)


def test_limit_scales_with_interval_and_liveness() -> None:
    # 2.5 s of silence: dead for 3 × 0.5 s, alive for 3 × 1 s and for 5 × 0.5 s
    assert not peer_alive(last_seen=0.0, now=2.5, interval_s=0.5, liveness=3)
    assert peer_alive(last_seen=0.0, now=2.5, interval_s=1.0, liveness=3)
    assert not peer_alive(last_seen=0.0, now=2.5, interval_s=0.5, liveness=5)
    assert peer_alive(last_seen=0.0, now=2.25, interval_s=0.5, liveness=5)


def test_backoff_doubles_from_one_second_without_jitter() -> None:
    assert [backoff_delay(a, jitter=0.0) for a in range(6)] == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0]


def test_backoff_is_capped_at_32_seconds() -> None:
    assert backoff_delay(6, jitter=0.0) == 32.0
    assert backoff_delay(50, jitter=0.0) == 32.0


def test_backoff_survives_a_very_long_outage() -> None:
    # an agent that retries every 32 s reaches attempt 2000 after ~18 hours
    assert backoff_delay(2000, jitter=0.0) == 32.0
    assert 28.8 <= backoff_delay(2000, rng=random.Random(1)) <= 35.2


def test_negative_attempt_counts_as_first() -> None:
    assert backoff_delay(-3, jitter=0.0) == 1.0


@pytest.mark.parametrize("attempt", [0, 1, 3, 5, 9])
def test_jitter_stays_within_ten_percent(attempt: int) -> None:
    nominal = min(32.0, 2.0**attempt)
    rng = random.Random(1234)
    delays = [backoff_delay(attempt, rng=rng) for _ in range(500)]
    assert all(0.9 * nominal <= d <= 1.1 * nominal for d in delays)
    assert len(set(delays)) > 1  # jitter actually spreads the delays


def test_jitter_is_reproducible_with_a_seeded_rng() -> None:
    first = [backoff_delay(a, rng=random.Random(7)) for a in range(8)]
    second = [backoff_delay(a, rng=random.Random(7)) for a in range(8)]
    assert first == second


def test_custom_base_and_cap() -> None:
    assert [backoff_delay(a, base_s=0.5, cap_s=3.0, jitter=0.0) for a in range(5)] == [
        0.5, 1.0, 2.0, 3.0, 3.0]
