"""The regression gate: rule parsing, violations only with confidence, helpful errors."""

from __future__ import annotations

import pytest

from coordinator.compare import CompareError, Delta, Rule, describe, parse_rule, violations
from coordinator.errors import SlmfleetError


def _delta(task: str, metric: str, delta: float, low: float, high: float,
           hib: bool = True) -> Delta:
    return Delta(task=task, metric=metric, delta=delta, low=low, high=high, higher_is_better=hib)


@pytest.mark.parametrize(("text", "rule"), [
    ("ner.f1_strict < -0.02", Rule("ner", "f1_strict", "<", -0.02)),
    ("classification.accuracy<=-0.05", Rule("classification", "accuracy", "<=", -0.05)),
    ("  classification.invalid_rate > .1 ", Rule("classification", "invalid_rate", ">", 0.1)),
    ("rag.echo_rate>=1e-2", Rule("rag", "echo_rate", ">=", 0.01)),
    ("summarization.rougeL < -2", Rule("summarization", "rougeL", "<", -2.0)),
])
def test_parse_good_rules(text: str, rule: Rule) -> None:
    assert parse_rule(text) == rule


@pytest.mark.parametrize("text", [
    "", "ner.f1_strict", "ner f1_strict < -0.02", "ner.f1_strict == 0", "ner.f1_strict < x",
    "ner.f1_strict < -0.02 extra", ".f1 < 0", "ner. < 0", "ner.f1 =< 0", "ner.f1 < nan",
    "ner.f1 < 1e999",
])
def test_parse_bad_rules_names_the_form(text: str) -> None:
    with pytest.raises(CompareError, match=r"TASK\.METRIC OP NUMBER"):
        parse_rule(text)
    assert issubclass(CompareError, SlmfleetError)


def test_rule_prints_back_parseable() -> None:
    rule = parse_rule("ner.f1_strict<-0.02")
    assert str(rule) == "ner.f1_strict < -0.02" and parse_rule(str(rule)) == rule


DELTAS = [
    _delta("ner", "f1_strict", -0.08, -0.12, -0.04),          # clearly worse
    _delta("classification", "accuracy", -0.05, -0.11, 0.01),  # straddles 0 and -0.02
    _delta("classification", "invalid_rate", 0.06, 0.02, 0.1, hib=False),
]


def test_violation_needs_the_whole_interval_beyond_the_bound() -> None:
    rules = [parse_rule("ner.f1_strict < -0.02"), parse_rule("classification.accuracy < -0.02"),
             parse_rule("classification.invalid_rate > 0.01")]
    found = violations(rules, DELTAS)
    assert [(r.key, d.key) for r, d in found] == [("ner.f1_strict", "ner.f1_strict"),
                                                  ("classification.invalid_rate",
                                                   "classification.invalid_rate")]
    assert "delta -0.0800 [-0.1200, -0.0400]" in describe(*found[0])


def test_interval_straddling_the_bound_is_not_a_violation() -> None:
    assert violations([parse_rule("ner.f1_strict < -0.1")], DELTAS) == []
    assert violations([parse_rule("classification.invalid_rate > 0.05")], DELTAS) == []


def test_strict_and_inclusive_bounds_at_the_edge() -> None:
    edge = [_delta("ner", "f1_strict", -0.06, -0.1, -0.02)]
    assert violations([parse_rule("ner.f1_strict < -0.02")], edge) == []
    assert len(violations([parse_rule("ner.f1_strict <= -0.02")], edge)) == 1
    assert violations([parse_rule("ner.f1_strict > -0.1")], edge) == []
    assert len(violations([parse_rule("ner.f1_strict >= -0.1")], edge)) == 1


def test_unknown_metric_suggests_the_nearest_name() -> None:
    with pytest.raises(CompareError) as err:
        violations([parse_rule("ner.f1_strct < -0.02")], DELTAS)
    message = str(err.value)
    assert "did you mean 'ner.f1_strict'?" in message
    assert "classification.accuracy, classification.invalid_rate, ner.f1_strict" in message


def test_unknown_task_without_close_name_lists_what_exists() -> None:
    with pytest.raises(CompareError, match="Available task.metric names: ner.f1_strict"):
        violations([parse_rule("rag.hit_rate < 0")], DELTAS[:1])


def test_duplicate_deltas_are_an_error() -> None:
    with pytest.raises(CompareError, match="two deltas for ner.f1_strict"):
        violations([], [DELTAS[0], DELTAS[0]])


def test_no_rules_no_violations() -> None:
    assert violations([], DELTAS) == []
