"""A real agent process against a scripted coordinator socket, over real ZeroMQ.

The test plays the coordinator's ROUTER by hand, so it can send what a real hub never
would: garbage frames (the agent logs and drops them and keeps going), then silence
(the agent declares the coordinator dead after liveness × interval, reconnects and
registers again), then SIGTERM (the agent leaves with a last "bye").
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import Collection, Iterator
from pathlib import Path

import pytest
import zmq

from node_agent import curve
from node_agent.agent import Agent, AgentConfig
from node_agent.errors import AgentError
from node_agent.model_store import ModelStore
from node_agent.protocol import DesiredWorkers, Heartbeat, Welcome, WorkerSpec, decode, encode
from node_agent.runtime import WorkerHandle

pytestmark = pytest.mark.integration

TOKEN = "wire-token"


@pytest.fixture
def router(tmp_path: Path) -> Iterator[tuple[zmq.Socket[bytes], int]]:
    """A scripted coordinator: a CURVE server whose public key is in tmp_path/hub.key."""
    context = zmq.Context()
    sock = context.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    curve.load_or_create(tmp_path, "hub").apply_server(sock)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    try:
        yield sock, port
    finally:
        sock.close()
        context.term()


def _next(sock: zmq.Socket[bytes], wanted: str, *, timeout_s: float = 30.0,
          peer: bytes | None = None, alive: bool = True) -> tuple[bytes, dict[str, object]]:
    """The next message of type `wanted` (optionally from `peer`), skipping others.

    While waiting, the fake coordinator heartbeats to `peer` if `alive`, as a hub does.
    """
    deadline = time.monotonic() + timeout_s
    seq = 0
    while time.monotonic() < deadline:
        if alive and peer is not None:
            sock.send_multipart([peer, *encode(Heartbeat(seq=seq))])
            seq += 1
        if not sock.poll(timeout=100):
            continue
        identity, *frames = sock.recv_multipart()
        body = json.loads(frames[0])
        if body["type"] == wanted and (peer is None or identity == peer):
            return identity, body
    raise AssertionError(f"no {wanted!r} message within {timeout_s} s")


def test_agent_survives_garbage_reconnects_after_silence_and_says_bye(
        router: tuple[zmq.Socket[bytes], int], tmp_path: Path) -> None:
    sock, port = router
    agent = subprocess.Popen(
        [sys.executable, "-m", "coordinator.cli", "agent", "--coordinator",
         f"127.0.0.1:{port}", "--token", TOKEN, "--name", "wire-node",
         "--coordinator-key", str(tmp_path / "hub.key"),
         "--cache-dir", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        peer, register = _next(sock, "register")
        assert register["token"] == TOKEN and register["name"] == "wire-node"
        decode([json.dumps(register).encode()])  # what the agent sent is valid protocol

        for garbage in ([b"\xff\xfe not json"], [b'{"type": "no_such_message"}'],
                        [b'{"type": "chunk", "sha256": "' + b"a" * 64 +
                         b'", "offset": 0, "total_size": 1}'],
                        [b'{"type": "welcome"}']):
            sock.send_multipart([peer, *garbage])
        sock.send_multipart([peer, *encode(Welcome(node_id=7, heartbeat_interval_s=0.2,
                                                   liveness=2))])
        _next(sock, "heartbeat", peer=peer)  # welcomed: heartbeats flow on the new interval
        _next(sock, "metrics", peer=peer)
        assert agent.poll() is None, "garbage must not stop the agent"

        # go silent (no more heartbeats): the agent gives up this session, registers afresh
        again, register = _next(sock, "register", timeout_s=30, peer=None)
        assert again != peer, "a new session uses a new routing identity"
        sock.send_multipart([again, *encode(Welcome(node_id=7, heartbeat_interval_s=0.2,
                                                    liveness=50))])
        _next(sock, "heartbeat", peer=again)

        agent.send_signal(signal.SIGTERM)
        _next(sock, "bye", peer=again, timeout_s=15)
        assert agent.wait(timeout=15) == 0
    finally:
        if agent.poll() is None:
            agent.kill()
        output = agent.communicate(timeout=10)[0]
    assert "dropped a bad message from the coordinator" in output
    assert "lost the coordinator; reconnecting" in output


class _BrokenRuntime:
    """A worker runtime (our own interface) whose start fails with an unexpected error."""

    name = "process"

    async def check(self) -> None:
        return None

    async def start(self, spec: WorkerSpec, *, path: Path, timeout_s: float) -> WorkerHandle:
        raise RuntimeError("simulated bug in a runtime")

    async def leftovers(self, *, keep: Collection[str]) -> list[str]:
        return []

    async def remove(self, ref: str) -> None:
        return None


def test_agent_stops_loudly_when_one_of_its_tasks_fails(
        router: tuple[zmq.Socket[bytes], int], tmp_path: Path) -> None:
    sock, port = router
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF" + b"\0" * 60)
    sha = hashlib.sha256(model.read_bytes()).hexdigest()
    store = ModelStore(tmp_path / "models")  # the model is already in the agent's store
    store.write_chunk(sha, offset=0, data=model.read_bytes(), total_size=64)
    store.finish(sha)
    agent = Agent(AgentConfig(coordinator=f"127.0.0.1:{port}", token=TOKEN,
                              coordinator_key=curve.parse_public_key(str(tmp_path / "hub.key")),
                              cache_dir=tmp_path, name="buggy"), runtime=_BrokenRuntime())

    def coordinator() -> None:
        peer, _ = _next(sock, "register")
        sock.send_multipart([peer, *encode(Welcome(node_id=1, heartbeat_interval_s=0.2,
                                                   liveness=50))])
        sock.send_multipart([peer, *encode(DesiredWorkers(workers=(WorkerSpec(
            model="m", sha256=sha, size=64, threads=1, n_ctx=128),)))])

    async def scenario() -> None:
        await asyncio.gather(asyncio.to_thread(coordinator),
                             asyncio.wait_for(agent.run(), timeout=30))

    with pytest.raises(AgentError, match="simulated bug in a runtime"):
        asyncio.run(scenario())
