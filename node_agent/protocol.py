"""The wire protocol between node agents and the coordinator, shared by both sides.

Every message is a frozen, strictly validated pydantic model with a `type` tag; the
tagged union `Message` is what travels. A message is one JSON frame, optionally
followed by one binary frame (model chunks). `decode` turns frames back into a
message or raises `ProtocolError` with the reason; it never lets bad input through.
"""

from __future__ import annotations

from typing import Annotated, Literal, NewType

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from node_agent.errors import ProtocolError
from node_agent.hardware import HardwareFacts, NodeMetrics

PROTOCOL_VERSION = 4
MAX_JSON_FRAME = 4 * 1024 * 1024
# Relayed frames: a relay prepends [RELAY, child routing id, child public key] to what a
# child sends up, and the hub prepends [RELAY, child routing id] per hop to what it sends
# down. The marker cannot start a JSON message, so it cannot be mistaken for one.
RELAY = b"\x00relay"

NodeId = NewType("NodeId", int)
LeaseId = NewType("LeaseId", str)
WorkItemId = NewType("WorkItemId", int)


class _Msg(BaseModel):
    model_config = ConfigDict(frozen=True, strict=True, extra="forbid")


class WorkerSpec(_Msg):
    """One llama.cpp worker the coordinator wants running on a node."""

    model: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)
    threads: int = Field(ge=1, le=64)
    n_ctx: int = Field(ge=64, le=131072)
    cpus: float | None = Field(default=None, gt=0, le=64)  # container CPU limit
    memory_mb: int | None = Field(default=None, ge=64)  # container memory limit


class WorkerStatus(_Msg):
    """What an agent observes of one of its workers."""

    model: str
    state: Literal["downloading", "starting", "ready", "busy", "failed"]
    detail: str = ""
    downloaded: int = 0
    rss_mb: float = 0.0


class Measurement(_Msg):
    """Timings and resource use of one completion, measured on the node."""

    ttft_s: float = Field(ge=0)
    tpot_s: float = Field(ge=0)
    e2e_s: float = Field(ge=0)
    prompt_tokens: int = Field(ge=0)
    completion_tokens: int = Field(ge=0)
    tokens_per_s: float = Field(ge=0)
    peak_rss_mb: float = Field(ge=0)
    cpu_temp_c: float | None = None


# --- agent -> coordinator -------------------------------------------------------------


class Register(_Msg):
    type: Literal["register"] = "register"
    protocol: int
    token: str
    name: str = Field(min_length=1, max_length=128)
    facts: HardwareFacts
    runtime: Literal["process", "docker"] = "process"
    relay: str | None = Field(default=None, max_length=255)  # HOST:PORT it relays on
    # leases it still works on or sent a result for lately: a restarted coordinator (or
    # a new session) keeps these and requeues the node's others
    leases: tuple[str, ...] = Field(default=(), max_length=4096)


class Heartbeat(_Msg):
    """Sent both ways on a short interval; any message also counts as a sign of life."""

    type: Literal["heartbeat"] = "heartbeat"
    seq: int = Field(ge=0)


class Metrics(_Msg):
    """Full status on its own interval; `errors` are node-level problems, each one line
    that says what is wrong and how to fix it (no container engine, missing image)."""

    type: Literal["metrics"] = "metrics"
    metrics: NodeMetrics
    workers: tuple[WorkerStatus, ...] = ()
    errors: tuple[str, ...] = ()


class ChunkRequest(_Msg):
    """A range of a model file. Sent to the coordinator over the session (relays pass it
    up), or with `peer` to another node's relay, which serves it from its own copy."""

    type: Literal["chunk_request"] = "chunk_request"
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    offset: int = Field(ge=0)
    length: int = Field(ge=1, le=8 * 1024 * 1024)
    peer: bool = False


class WorkRequest(_Msg):
    type: Literal["work_request"] = "work_request"
    model: str
    slots: int = Field(ge=1, le=64)


class WorkResult(_Msg):
    type: Literal["work_result"] = "work_result"
    lease_id: str
    item_id: int
    output: str
    measurement: Measurement | None
    error: str | None = None


class LeasesHeld(_Msg):
    """After moving to another route: the leases this node still works on, and so that
    any other lease sent to it may have been lost on the old route."""

    type: Literal["leases_held"] = "leases_held"
    lease_ids: tuple[str, ...]


class Bye(_Msg):
    """The agent's last message, sent when it stops on purpose."""

    type: Literal["bye"] = "bye"


# --- coordinator -> agent -------------------------------------------------------------


class Welcome(_Msg):
    type: Literal["welcome"] = "welcome"
    node_id: int = Field(ge=1)
    heartbeat_interval_s: float = Field(gt=0)
    liveness: int = Field(ge=1)
    parent: int | None = None
    neighbours: tuple[int, ...] = ()


class Rejected(_Msg):
    """Registration refused, or a message from a peer that is not registered."""

    type: Literal["rejected"] = "rejected"
    reason: str
    reregister: bool = False


class OverlayPeer(_Msg):
    """A node as placed in the overlay: where its relay listens and its public key."""

    position: int = Field(ge=1)
    node_id: int = Field(ge=1)
    relay: str | None = None
    public_key: str = Field(min_length=40, max_length=40)
    up: bool


class Topology(_Msg):
    """The overlay as the coordinator sees it, sent when it changes: the receiving agent's
    position and every placed node; agents route toward the root along it."""

    type: Literal["topology"] = "topology"
    position: int = Field(ge=1)
    fanout: int = Field(ge=1)
    nodes: tuple[OverlayPeer, ...]


class DesiredWorkers(_Msg):
    type: Literal["desired_workers"] = "desired_workers"
    workers: tuple[WorkerSpec, ...]


class Chunk(_Msg):
    """Header of a model chunk; the bytes follow in the next frame."""

    type: Literal["chunk"] = "chunk"
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    offset: int = Field(ge=0)
    total_size: int = Field(ge=0)


class ChunkUnavailable(_Msg):
    """A peer's answer to a chunk request it cannot serve (it neither holds the range nor
    is it receiving it); the requester takes that range from elsewhere."""

    type: Literal["chunk_unavailable"] = "chunk_unavailable"
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    offset: int = Field(ge=0)


class WorkLease(_Msg):
    type: Literal["work_lease"] = "work_lease"
    lease_id: str
    item_id: int
    model: str
    prompt: str
    stop: tuple[str, ...]
    max_tokens: int = Field(ge=1)
    temperature: float = Field(ge=0)
    seed: int
    lease_s: float = Field(gt=0)
    kind: Literal["complete", "score"] = "complete"  # score: token log-probs of the prompt


class CancelLease(_Msg):
    """Stop working on a lease: the other copy of its item (a backup task) won."""

    type: Literal["cancel_lease"] = "cancel_lease"
    lease_id: str


class NoWork(_Msg):
    type: Literal["no_work"] = "no_work"
    model: str
    retry_after_s: float = Field(ge=0)


class ErrorReply(_Msg):
    """The peer's message was understood but could not be acted on."""

    type: Literal["error"] = "error"
    code: str
    message: str


Message = Annotated[
    Register
    | Heartbeat
    | Metrics
    | ChunkRequest
    | WorkRequest
    | WorkResult
    | LeasesHeld
    | Bye
    | Welcome
    | Rejected
    | DesiredWorkers
    | Topology
    | Chunk
    | ChunkUnavailable
    | WorkLease
    | CancelLease
    | NoWork
    | ErrorReply,
    Field(discriminator="type"),
]

_ADAPTER: TypeAdapter[Message] = TypeAdapter(Message)


def encode(message: _Msg, data: bytes | None = None) -> list[bytes]:
    """Frames for one message: its JSON, then `data` as a second frame when given."""
    frames = [message.model_dump_json().encode()]
    if data is not None:
        frames.append(data)
    return frames


def decode(frames: list[bytes]) -> tuple[Message, bytes | None]:
    """Parse frames into (message, optional binary payload); raise ProtocolError on bad input."""
    if not frames or len(frames) > 2:
        raise ProtocolError(f"expected 1 or 2 frames, got {len(frames)}")
    head = frames[0]
    if len(head) > MAX_JSON_FRAME:
        raise ProtocolError(f"message frame of {len(head)} bytes exceeds {MAX_JSON_FRAME}")
    try:
        message = _ADAPTER.validate_json(head)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "message"
        raise ProtocolError(f"invalid message at {where}: {first['msg']}") from None
    data = frames[1] if len(frames) == 2 else None
    if isinstance(message, Chunk) and data is None:
        raise ProtocolError("a chunk header must be followed by exactly one data frame")
    if not isinstance(message, Chunk) and data is not None:
        raise ProtocolError(f"a '{message.type}' message takes no data frame; only 'chunk' "
                            "headers are followed by one")
    return message, data
