"""Unit tests for bootstrap intervals and paired bootstrap comparisons."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from scipy import stats as scipy_stats  # type: ignore[import-untyped]

from coordinator.evaluation.metrics import ner_aggregate, ner_item
from coordinator.evaluation.stats import Difference, Interval, bootstrap, paired_bootstrap


def mean(items: Sequence[float]) -> dict[str, float]:
    return {"mean": float(np.mean(items))} if items else {}


def _normal(n: int, seed: int = 1) -> list[float]:
    return [float(x) for x in np.random.default_rng(seed).normal(0.0, 1.0, size=n)]


def test_interval_contains_estimate() -> None:
    items = _normal(50)
    result = bootstrap(items, mean)
    interval = result["mean"]
    assert interval.estimate == pytest.approx(float(np.mean(items)))
    assert interval.low < interval.estimate < interval.high


def test_interval_shrinks_with_more_data() -> None:
    small = bootstrap(_normal(20), mean)["mean"]
    large = bootstrap(_normal(2000), mean)["mean"]
    assert large.high - large.low < (small.high - small.low) / 5


def test_interval_matches_normal_theory_and_scipy() -> None:
    items = _normal(400, seed=7)
    ours = bootstrap(items, mean, resamples=4000)["mean"]
    # Analytical 95% half-width of a mean: 1.96 * sd / sqrt(n).
    half_width = 1.96 * float(np.std(items, ddof=1)) / math.sqrt(len(items))
    assert (ours.high - ours.low) / 2 == pytest.approx(half_width, rel=0.1)
    reference = scipy_stats.bootstrap(
        (np.asarray(items),), np.mean, n_resamples=4000, method="percentile", rng=0
    ).confidence_interval
    assert ours.low == pytest.approx(reference.low, abs=0.02)
    assert ours.high == pytest.approx(reference.high, abs=0.02)


def test_confidence_level_widens_interval() -> None:
    items = _normal(100)
    narrow = bootstrap(items, mean, confidence=0.5)["mean"]
    wide = bootstrap(items, mean, confidence=0.99)["mean"]
    assert wide.low < narrow.low and narrow.high < wide.high


def test_reproducible_with_seed() -> None:
    items = _normal(30)
    assert bootstrap(items, mean, seed=3) == bootstrap(items, mean, seed=3)
    assert bootstrap(items, mean, seed=3) != bootstrap(items, mean, seed=4)


def test_fewer_than_two_items() -> None:
    assert bootstrap([0.7], mean) == {"mean": Interval(0.7, 0.7, 0.7)}
    assert bootstrap([], mean) == {}


def test_missing_and_nan_metrics_are_skipped() -> None:
    def ratios(items: Sequence[float]) -> dict[str, float]:
        positives = [x for x in items if x > 0]
        scores = {"nan_without_positive": float(np.mean(positives)) if positives else math.nan}
        if positives:
            scores["missing_without_positive"] = float(np.mean(positives))
        return scores

    items = [0.0] * 9 + [1.0]  # about a third of resamples contain no positive item
    result = bootstrap(items, ratios, resamples=200)
    for name in ("nan_without_positive", "missing_without_positive"):
        assert result[name] == Interval(1.0, 1.0, 1.0)


@pytest.mark.parametrize("kwargs", [{"resamples": 0}, {"confidence": 1.0}, {"confidence": 0.0}])
def test_invalid_settings(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        bootstrap([1.0, 2.0], mean, **kwargs)
    with pytest.raises(ValueError):
        paired_bootstrap([1.0, 2.0], [1.0, 2.0], mean, **kwargs)


def test_paired_identical_systems() -> None:
    items = _normal(40)
    assert paired_bootstrap(items, list(items), mean) == {"mean": Difference(0.0, 0.0, 0.0, 1.0)}


def test_paired_clearly_better_candidate() -> None:
    rng = np.random.default_rng(5)
    base = [float(x) for x in rng.random(200) < 0.4]
    candidate = [max(b, float(x)) for b, x in zip(base, rng.random(200) < 0.5, strict=True)]
    result = paired_bootstrap(base, candidate, mean)["mean"]
    assert result.delta == pytest.approx(float(np.mean(candidate) - np.mean(base)))
    assert 0.0 < result.low < result.delta < result.high
    assert result.p_value < 0.01
    reverse = paired_bootstrap(candidate, base, mean)["mean"]
    assert reverse.high < 0.0 and reverse.delta == pytest.approx(-result.delta)


def test_pairing_removes_item_difficulty() -> None:
    base = _normal(100)  # items differ a lot in difficulty ...
    candidate = [x + 0.05 for x in base]  # ... but the candidate is uniformly a bit better
    unpaired = bootstrap(base, mean)["mean"]
    paired = paired_bootstrap(base, candidate, mean)["mean"]
    assert paired.low == pytest.approx(0.05) and paired.high == pytest.approx(0.05)
    assert unpaired.high - unpaired.low > 0.2
    assert paired.p_value == 0.0


def test_paired_no_difference_has_large_p_value() -> None:
    rng = np.random.default_rng(11)
    base = [float(x) for x in rng.random(300) < 0.5]
    candidate = [float(x) for x in rng.random(300) < 0.5]
    result = paired_bootstrap(base, candidate, mean, seed=2)["mean"]
    assert result.low < 0.0 < result.high
    assert result.p_value > 0.05


def test_paired_needs_aligned_items() -> None:
    with pytest.raises(ValueError, match="2 base and 3 candidate"):
        paired_bootstrap([1.0, 2.0], [1.0, 2.0, 3.0], mean)
    with pytest.raises(ValueError, match="position 1"):
        paired_bootstrap([1.0, 2.0], [1.0, 3.0], mean, key=lambda x: x)


def test_paired_fewer_than_two_items() -> None:
    result = paired_bootstrap([0.2], [0.5], mean)["mean"]
    assert (result.delta, result.low, result.high) == pytest.approx((0.3, 0.3, 0.3))
    assert result.p_value == 1.0


def test_bootstrap_of_ner_aggregate() -> None:
    sentence = "Ada Lovelace visited Oslo."
    gold = [("Ada Lovelace", "PER"), ("Oslo", "LOC")]
    good = ner_item(sentence=sentence, predicted=gold, gold=gold, extra_text=False)
    bad = ner_item(sentence=sentence, predicted=gold[:1], gold=gold, extra_text=True)
    base = [bad] * 6 + [good] * 4
    candidate = [good] * 10
    intervals = bootstrap(base, ner_aggregate, resamples=300)
    assert set(intervals) == set(ner_aggregate(base))
    assert intervals["r_final"].low <= intervals["r_final"].estimate <= intervals["r_final"].high
    differences = paired_bootstrap(base, candidate, ner_aggregate, resamples=300)
    assert differences["r_final"].delta == pytest.approx(1.0 - (6 * 0.25 + 4 * 1.0) / 10)
    assert differences["r_final"].low > 0.0
