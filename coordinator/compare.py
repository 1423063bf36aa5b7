"""The regression gate: rules on candidate-minus-base metric deltas, judged with confidence.

A rule such as `ner.f1_strict < -0.02` says "fail if F1 dropped by more than 0.02". It is
violated only when the whole paired-bootstrap 95% interval of the delta satisfies it, so
noise alone never fails a gate. Pure functions on plain data; the deltas come from elsewhere.
"""

from __future__ import annotations

import difflib
import math
import operator
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, cast

from coordinator.errors import SlmfleetError

Op = Literal["<", "<=", ">", ">="]
RULE_FORM = "TASK.METRIC OP NUMBER (OP one of <, <=, >, >=; e.g. 'ner.f1_strict < -0.02')"

_OPS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}
_RULE_RE = re.compile(
    r"^\s*(?P<task>[^\s.<>=]+)\.(?P<metric>[^\s<>=]+)\s*(?P<op><=|>=|<|>)\s*"
    r"(?P<bound>[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)\s*$")


class CompareError(SlmfleetError):
    """A gate rule is malformed or names a task.metric the comparison does not have."""


@dataclass(frozen=True)
class Rule:
    """Fail the gate when the delta of task.metric is `op bound` with confidence."""

    task: str
    metric: str
    op: Op
    bound: float

    @property
    def key(self) -> str:
        return f"{self.task}.{self.metric}"

    def __str__(self) -> str:
        return f"{self.key} {self.op} {self.bound:g}"


@dataclass(frozen=True)
class Delta:
    """Candidate minus base for one task.metric, with its paired-bootstrap 95% interval."""

    task: str
    metric: str
    delta: float
    low: float
    high: float
    higher_is_better: bool

    @property
    def key(self) -> str:
        return f"{self.task}.{self.metric}"


def parse_rule(text: str) -> Rule:
    """Parse `TASK.METRIC OP NUMBER`, e.g. "classification.accuracy<=-0.05"."""
    match = _RULE_RE.match(text)
    if match is None:
        raise CompareError(f"cannot parse gate rule {text!r}: expected {RULE_FORM}")
    bound = float(match["bound"])
    if not math.isfinite(bound):
        raise CompareError(f"gate rule {text!r} has a non-finite bound: expected {RULE_FORM}")
    return Rule(task=match["task"], metric=match["metric"], op=cast(Op, match["op"]),
                bound=bound)


def is_violated(rule: Rule, delta: Delta) -> bool:
    """True when the whole interval satisfies the rule: `<`/`<=` test high, `>`/`>=` low.

    An interval with a NaN end never violates (NaN compares false)."""
    edge = delta.high if rule.op in ("<", "<=") else delta.low
    return _OPS[rule.op](edge, rule.bound)


def violations(rules: Sequence[Rule], deltas: Sequence[Delta]) -> list[tuple[Rule, Delta]]:
    """The rules violated with confidence, each with its delta, in rule order.

    Raises CompareError when a rule names a task.metric no delta has (all such rules in one
    message, each with the nearest available name) or when two deltas share a task.metric.
    """
    by_key: dict[str, Delta] = {}
    for d in deltas:
        if d.key in by_key:
            raise CompareError(f"two deltas for {d.key}: each task.metric must appear once")
        by_key[d.key] = d
    unknown = [rule for rule in rules if rule.key not in by_key]
    if unknown:
        raise CompareError(_unknown_message(unknown, sorted(by_key)))
    return [(rule, by_key[rule.key]) for rule in rules if is_violated(rule, by_key[rule.key])]


def _unknown_message(unknown: Sequence[Rule], available: Sequence[str]) -> str:
    lines = []
    for rule in unknown:
        close = difflib.get_close_matches(rule.key, available, n=1, cutoff=0.5)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        lines.append(f"gate rule '{rule}' names {rule.key!r}, which this comparison does "
                     f"not have{hint}")
    names = ", ".join(available) if available else "none"
    return "; ".join(lines) + f". Available task.metric names: {names}"


def describe(rule: Rule, delta: Delta) -> str:
    """One line for a violated rule, e.g. for the CLI's failure output."""
    direction = "higher" if delta.higher_is_better else "lower"
    return (f"{rule}: delta {delta.delta:+.4f} [{delta.low:+.4f}, {delta.high:+.4f}] "
            f"({direction} is better)")
