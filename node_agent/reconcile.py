"""Worker reconciliation as a pure function: desired workers vs what the node observes.

`plan(desired=..., observed=..., stored=...)` returns the actions that move the node
toward the coordinator's desired state — download a missing model, start a worker,
restart a dead one, stop one no longer wanted. No I/O here; the agent's loop carries
the actions out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from node_agent.protocol import WorkerSpec


@dataclass(frozen=True)
class ObservedWorker:
    spec: WorkerSpec
    state: Literal["downloading", "starting", "ready", "busy", "failed"]
    alive: bool


@dataclass(frozen=True)
class Download:
    spec: WorkerSpec


@dataclass(frozen=True)
class Start:
    spec: WorkerSpec


@dataclass(frozen=True)
class Stop:
    model: str


Action = Download | Start | Stop


def plan(*, desired: Mapping[str, WorkerSpec], observed: Mapping[str, ObservedWorker],
         stored: frozenset[str], downloading: frozenset[str],
         backing_off: frozenset[str] = frozenset()) -> list[Action]:
    """Actions for this step, stops first; a model is downloaded once, then started.

    Models in `backing_off` failed recently and are not started or fetched again yet.
    """
    actions: list[Action] = []
    for model, worker in sorted(observed.items()):
        wanted = desired.get(model)
        if wanted is None or wanted != worker.spec:
            actions.append(Stop(model))
        elif not worker.alive and worker.state in ("ready", "busy", "failed"):
            actions.append(Stop(model))
    stopping = {a.model for a in actions if isinstance(a, Stop)}
    for model, spec in sorted(desired.items()):
        if model in observed and model not in stopping:
            continue
        if spec.sha256 in downloading or model in backing_off:
            continue
        if spec.sha256 not in stored:
            actions.append(Download(spec))
        else:
            actions.append(Start(spec))
    return actions
