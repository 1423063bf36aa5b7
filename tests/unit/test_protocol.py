"""Unit tests for the wire protocol: every message round-trips, bad frames are refused."""

from __future__ import annotations

import json
from typing import Any, get_args

import pytest
from pydantic import ValidationError

from node_agent.errors import ProtocolError
from node_agent.hardware import HardwareFacts, NodeMetrics
from node_agent.protocol import (
    MAX_JSON_FRAME,
    PROTOCOL_VERSION,
    Bye,
    CancelLease,
    Chunk,
    ChunkRequest,
    ChunkUnavailable,
    DesiredWorkers,
    ErrorReply,
    Heartbeat,
    LeasesHeld,
    Measurement,
    Message,
    Metrics,
    NoWork,
    OverlayPeer,
    Register,
    Rejected,
    Topology,
    Welcome,
    WorkerSpec,
    WorkerStatus,
    WorkLease,
    WorkRequest,
    WorkResult,
    decode,
    encode,
)

SHA = "ab" * 32

FACTS = HardwareFacts(hostname="pi-01", pi_model="Raspberry Pi 5 Model B Rev 1.0",
                      cpu_model="Cortex-A76", cores=4, ram_mb=8048, disk_total_gb=58.2,
                      arch="aarch64", os="Debian GNU/Linux 12 (bookworm)", python="3.11.2",
                      llama_cpp_version=None)
METRICS = NodeMetrics(cpu_percent=12.5, load1=0.4, mem_used_percent=31.0,
                      mem_available_mb=5500, disk_free_gb=40.1, cpu_temp_c=51.2,
                      throttled=0x50005)
SPEC = WorkerSpec(model="gemma", sha256=SHA, size=1234, threads=4, n_ctx=2048)
MEASUREMENT = Measurement(ttft_s=0.2, tpot_s=0.05, e2e_s=1.1, prompt_tokens=40,
                          completion_tokens=3, tokens_per_s=18.5, peak_rss_mb=300.0,
                          cpu_temp_c=None)

# One non-default instance of every message type that may travel.
EXAMPLES: list[Any] = [
    Register(protocol=PROTOCOL_VERSION, token="t0k", name="pi-01", facts=FACTS,
             runtime="docker"),
    Heartbeat(seq=7),
    Metrics(metrics=METRICS, workers=(WorkerStatus(model="gemma", state="busy",
                                                   rss_mb=310.5),)),
    ChunkRequest(sha256=SHA, offset=1 << 20, length=1 << 20, peer=True),
    WorkRequest(model="gemma", slots=2),
    WorkResult(lease_id="lease-1", item_id=3, output=" billing", measurement=MEASUREMENT),
    WorkResult(lease_id="lease-2", item_id=4, output="", measurement=None, error="timeout"),
    Bye(),
    Welcome(node_id=2, heartbeat_interval_s=1.0, liveness=3, parent=0, neighbours=(1, 3)),
    Rejected(reason="bad token", reregister=True),
    DesiredWorkers(workers=(SPEC,)),
    LeasesHeld(lease_ids=("a1b2",)),
    Topology(position=2, fanout=2, nodes=(
        OverlayPeer(position=1, node_id=4, relay="10.0.0.4:5556", public_key="k" * 40, up=True),
        OverlayPeer(position=2, node_id=5, public_key="j" * 40, up=False))),
    Chunk(sha256=SHA, offset=0, total_size=1234),
    ChunkUnavailable(sha256=SHA, offset=1 << 20),
    WorkLease(lease_id="lease-1", item_id=3, model="gemma", prompt="Message: x\nLabel:",
              stop=("\n",), max_tokens=16, temperature=0.0, seed=42, lease_s=60.0),
    NoWork(model="gemma", retry_after_s=0.5),
    CancelLease(lease_id="abc123"),
    ErrorReply(code="unknown_model", message="no model 'x'"),
]


def _frame(obj: dict[str, Any]) -> list[bytes]:
    return [json.dumps(obj).encode()]


def _heartbeat_dict(**changes: Any) -> dict[str, Any]:
    return {"type": "heartbeat", "seq": 1, **changes}


def test_examples_cover_every_message_type() -> None:
    union_members = set(get_args(get_args(Message)[0]))
    assert {type(m) for m in EXAMPLES} == union_members


@pytest.mark.parametrize("message", EXAMPLES, ids=lambda m: type(m).__name__)
def test_round_trip(message: Any) -> None:
    data = b"\x00\x01chunk-bytes" if isinstance(message, Chunk) else None
    frames = encode(message, data)
    assert len(frames) == (2 if data is not None else 1)
    decoded, payload = decode(frames)
    assert type(decoded) is type(message)
    assert decoded == message
    assert payload == data


@pytest.mark.parametrize("frame", [b"not json", b"{\"type\": \"heartbeat\", ", b"\xff\xfe"])
def test_rejects_non_json(frame: bytes) -> None:
    with pytest.raises(ProtocolError, match="(?i)json"):
        decode([frame])


def test_rejects_json_that_is_not_an_object() -> None:
    with pytest.raises(ProtocolError, match="invalid message"):
        decode([b"[1, 2]"])


def test_rejects_unknown_type() -> None:
    with pytest.raises(ProtocolError, match="launch_missiles"):
        decode(_frame({"type": "launch_missiles"}))


def test_rejects_missing_type() -> None:
    with pytest.raises(ProtocolError, match="type"):
        decode(_frame({"seq": 1}))


def test_rejects_missing_field() -> None:
    with pytest.raises(ProtocolError, match=r"heartbeat\.seq.*(?i:required)"):
        decode(_frame({"type": "heartbeat"}))


def test_rejects_extra_field() -> None:
    with pytest.raises(ProtocolError, match=r"heartbeat\.colour.*(?i:extra)"):
        decode(_frame(_heartbeat_dict(colour="red")))


@pytest.mark.parametrize("seq", ["1", 1.5, True, None])
def test_rejects_wrong_type_strictly(seq: Any) -> None:
    with pytest.raises(ProtocolError, match=r"heartbeat\.seq"):
        decode(_frame(_heartbeat_dict(seq=seq)))


def test_rejects_wrong_type_in_nested_hardware_facts() -> None:
    register = json.loads(EXAMPLES[0].model_dump_json())
    register["facts"]["cores"] = "4"
    with pytest.raises(ProtocolError, match=r"facts\.cores"):
        decode(_frame(register))


def test_rejects_out_of_range_value() -> None:
    with pytest.raises(ProtocolError, match=r"heartbeat\.seq"):
        decode(_frame(_heartbeat_dict(seq=-1)))


@pytest.mark.parametrize("count", [0, 3])
def test_rejects_wrong_frame_count(count: int) -> None:
    frames = encode(Heartbeat(seq=1)) + [b"x"] * (count - 1) if count else []
    with pytest.raises(ProtocolError, match=f"got {count}"):
        decode(frames)


def test_rejects_chunk_header_without_data_frame() -> None:
    with pytest.raises(ProtocolError, match="chunk"):
        decode(encode(Chunk(sha256=SHA, offset=0, total_size=10)))


def test_rejects_data_frame_after_non_chunk() -> None:
    with pytest.raises(ProtocolError, match="heartbeat"):
        decode(encode(Heartbeat(seq=1), b"stray bytes"))


def test_rejects_oversize_frame_before_parsing() -> None:
    # valid JSON padded with whitespace: only the size check can refuse it
    frame = json.dumps(_heartbeat_dict()).encode() + b" " * MAX_JSON_FRAME
    with pytest.raises(ProtocolError, match="exceeds"):
        decode([frame])


def test_accepts_frame_at_size_limit() -> None:
    head = json.dumps(_heartbeat_dict()).encode()
    frame = head + b" " * (MAX_JSON_FRAME - len(head))
    message, _ = decode([frame])
    assert message == Heartbeat(seq=1)


@pytest.mark.parametrize("sha", ["AB" * 32, "ab" * 31, "ab" * 32 + "a", "zz" * 32, ""])
def test_rejects_bad_sha256(sha: str) -> None:
    frame = _frame({"type": "chunk_request", "sha256": sha, "offset": 0, "length": 1})
    with pytest.raises(ProtocolError, match=r"chunk_request\.sha256"):
        decode(frame)


def test_messages_are_frozen() -> None:
    heartbeat = Heartbeat(seq=1)
    with pytest.raises(ValidationError):
        heartbeat.seq = 2  # type: ignore[misc]
    assert heartbeat.seq == 1


def test_constructor_is_strict_too() -> None:
    with pytest.raises(ValidationError):
        Heartbeat(seq="1")  # type: ignore[arg-type]
