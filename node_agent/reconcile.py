"""Worker reconciliation as a pure function: desired workers vs what the node observes.

`plan(desired=..., observed=..., stored=...)` returns the actions that move the node
toward the coordinator's desired state: remove workers left behind by an earlier run of
the agent, stop workers no longer wanted (or whose spec changed, or that died), download
a missing model, start a worker. No I/O here; the agent's loop carries the actions out,
and it backs off before restarting a worker that crashed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from node_agent.protocol import WorkerSpec

StopReason = Literal["unwanted", "changed", "crashed", "failed"]


@dataclass(frozen=True)
class ObservedWorker:
    spec: WorkerSpec
    state: Literal["downloading", "starting", "ready", "busy", "failed"]
    alive: bool


@dataclass(frozen=True)
class Remove:
    """A worker the runtime still runs for this agent, left by an earlier run of it."""

    ref: str


@dataclass(frozen=True)
class Download:
    spec: WorkerSpec


@dataclass(frozen=True)
class Start:
    spec: WorkerSpec


@dataclass(frozen=True)
class Stop:
    model: str
    reason: StopReason = "unwanted"


Action = Remove | Download | Start | Stop


def _stop_reason(worker: ObservedWorker, wanted: WorkerSpec | None) -> StopReason | None:
    if wanted is None:
        return "unwanted"
    if wanted != worker.spec:
        return "changed"
    if not worker.alive and worker.state in ("ready", "busy"):
        return "crashed"  # died while serving; the agent has not seen it yet
    if worker.state == "failed":  # dead, or alive but no longer answering
        return "failed"  # the agent saw it fail and has already backed off
    return None


def plan(*, desired: Mapping[str, WorkerSpec], observed: Mapping[str, ObservedWorker],
         stored: frozenset[str], downloading: frozenset[str],
         backing_off: frozenset[str] = frozenset(), leftovers: tuple[str, ...] = (),
         runtime_ready: bool = True) -> list[Action]:
    """Actions for this step: removals and stops first; a model is downloaded once, then
    started.

    Models in `backing_off` failed recently and are not started or fetched again yet;
    while the runtime is not ready (no container engine, no image), nothing is started.
    """
    actions: list[Action] = [Remove(ref) for ref in leftovers]
    for model, worker in sorted(observed.items()):
        reason = _stop_reason(worker, desired.get(model))
        if reason is not None:
            actions.append(Stop(model, reason))
    stopping = {a.model for a in actions if isinstance(a, Stop)}
    for model, spec in sorted(desired.items()):
        if model in observed and model not in stopping:
            continue
        if spec.sha256 in downloading or model in backing_off:
            continue
        if spec.sha256 not in stored:
            actions.append(Download(spec))
        elif runtime_ready:
            actions.append(Start(spec))
    return actions
