"""Uncertainty for evaluation scores: percentile bootstrap intervals and paired comparisons.

Both functions resample *items* (sentences, questions) with replacement and re-run the same
aggregate that produced the headline score, so corpus-level metrics (corpus BLEU, micro-F1) get
honest intervals. A seeded :class:`numpy.random.Generator` makes every result reproducible.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

T = TypeVar("T")
Aggregate = Callable[[Sequence[T]], Mapping[str, float]]


@dataclass(frozen=True)
class Interval:
    """A point estimate on all items and its percentile bootstrap interval ``[low, high]``."""

    estimate: float
    low: float
    high: float


@dataclass(frozen=True)
class Difference:
    """Candidate minus base on the same items, its bootstrap interval and two-sided p-value."""

    delta: float
    low: float
    high: float
    p_value: float


def _check(resamples: int, confidence: float) -> None:
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be strictly between 0 and 1, got {confidence}")


def _bounds(values: list[float], confidence: float, fallback: float) -> tuple[float, float]:
    """Percentile interval of ``values``; ``(fallback, fallback)`` when there are none."""
    if not values:
        return fallback, fallback
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(np.asarray(values, dtype=float), [tail, 100.0 - tail])
    return float(low), float(high)


def bootstrap(
    items: Sequence[T],
    aggregate: Aggregate[T],
    *,
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, Interval]:
    """Percentile bootstrap interval for every metric ``aggregate(items)`` reports.

    Each of ``resamples`` rounds draws ``len(items)`` items with replacement and aggregates
    them; a metric missing or NaN in a round is skipped for that round. The estimate is always
    ``aggregate(items)``. With fewer than two items (or no usable round) ``low = high =
    estimate``.
    """
    _check(resamples, confidence)
    estimate = dict(aggregate(items))
    samples: dict[str, list[float]] = {name: [] for name in estimate}
    if len(items) >= 2:
        rng = np.random.default_rng(seed)
        for _ in range(resamples):
            indices = rng.integers(0, len(items), size=len(items))
            scores = aggregate([items[i] for i in indices])
            for name, values in samples.items():
                value = scores.get(name)
                if value is not None and not math.isnan(value):
                    values.append(float(value))
    return {
        name: Interval(value, *_bounds(samples[name], confidence, value))
        for name, value in estimate.items()
    }


def _check_aligned(
    base: Sequence[T], candidate: Sequence[T], key: Callable[[T], Hashable] | None
) -> None:
    if len(base) != len(candidate):
        raise ValueError(
            f"paired_bootstrap needs the same items for both systems, got {len(base)} base"
            f" and {len(candidate)} candidate items; score both on the same item list"
        )
    if key is None:
        return
    for position, (b, c) in enumerate(zip(base, candidate, strict=True)):
        if key(b) != key(c):
            raise ValueError(
                f"paired_bootstrap items are not aligned at position {position}: base"
                f" {key(b)!r} vs candidate {key(c)!r}; sort both by item id first"
            )


def _p_value(deltas: list[float]) -> float:
    """Two-sided: twice the smaller share of resampled deltas at or beyond 0 on either side."""
    if not deltas:
        return 1.0
    array = np.asarray(deltas, dtype=float)
    share = min(float(np.mean(array <= 0.0)), float(np.mean(array >= 0.0)))
    return min(1.0, 2.0 * share)


def paired_bootstrap(
    base: Sequence[T],
    candidate: Sequence[T],
    aggregate: Aggregate[T],
    *,
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    key: Callable[[T], Hashable] | None = None,
) -> dict[str, Difference]:
    """Paired bootstrap of ``aggregate(candidate) - aggregate(base)`` for every shared metric.

    ``base`` and ``candidate`` hold the two systems' scores on the same items in the same
    order; the lengths must match and, when ``key`` is given (e.g. an item id getter), so must
    ``key`` at every position, else :class:`ValueError`. Each round draws one set of indices and
    applies it to both systems, so per-item difficulty cancels out. ``low``/``high`` are the
    percentile interval of the resampled deltas (rounds where a metric is missing or NaN on
    either side are skipped).

    ``p_value`` is two-sided: ``min(1, 2 * min(share of deltas <= 0, share of deltas >= 0))``,
    i.e. twice the share of resampled deltas on the other side of 0 from the observed delta
    (identical systems give 1.0). Its resolution is ``1/resamples``; 0.0 means "below that".
    With fewer than two items ``low = high = delta`` and ``p_value = 1.0``.
    """
    _check(resamples, confidence)
    _check_aligned(base, candidate, key)
    base_scores, candidate_scores = aggregate(base), aggregate(candidate)
    delta = {
        name: float(candidate_scores[name]) - float(base_scores[name])
        for name in candidate_scores
        if name in base_scores
    }
    samples: dict[str, list[float]] = {name: [] for name in delta}
    if len(base) >= 2:
        rng = np.random.default_rng(seed)
        for _ in range(resamples):
            indices = rng.integers(0, len(base), size=len(base))
            b = aggregate([base[i] for i in indices])
            c = aggregate([candidate[i] for i in indices])
            for name, values in samples.items():
                b_value, c_value = b.get(name), c.get(name)
                if b_value is None or c_value is None:
                    continue
                if not (math.isnan(b_value) or math.isnan(c_value)):
                    values.append(float(c_value) - float(b_value))
    return {
        name: Difference(d, *_bounds(samples[name], confidence, d), _p_value(samples[name]))
        for name, d in delta.items()
    }
