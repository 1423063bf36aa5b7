"""A relay passes on only what placed fleet nodes send, over real CurveZMQ on loopback:
the handshake completes for any key (a node that learnt of its relay before the relay
learnt of it must not be shut out: ZeroMQ does not reconnect after a refused handshake),
and each message is checked against the relay's latest topology. Found in 15-node runs,
where joining nodes three levels down were refused by a relay whose topology was a few
milliseconds behind and never reconnected."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest
import zmq
import zmq.asyncio

from node_agent import curve
from node_agent.chunk_server import ChunkServer
from node_agent.model_store import ModelStore
from node_agent.protocol import (
    ChunkRequest,
    Heartbeat,
    OverlayPeer,
    Topology,
    decode,
    encode,
)
from node_agent.relay import RELAY, RelayServer

pytestmark = pytest.mark.integration

SHA = "a" * 64


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def topology(*keys: bytes) -> Topology:
    return Topology(position=1, fanout=2, nodes=tuple(
        OverlayPeer(position=i, node_id=i, public_key=key.decode(), up=True, relay=None)
        for i, key in enumerate(keys, start=1)))


async def _exercise(tmp_path: Path) -> None:
    context = zmq.asyncio.Context()
    relay_keys = curve.load_or_create(tmp_path / "relay", "agent")
    child_keys = curve.load_or_create(tmp_path / "child", "agent")
    store = ModelStore(tmp_path / "models")
    store.path(SHA).write_bytes(b"GGUF" + bytes(60))
    port = free_port()
    relay = RelayServer(context=context, keys=relay_keys, bind=f"127.0.0.1:{port}",
                        chunks=ChunkServer(store, wait_s=0.2))
    relay.admit(topology(relay_keys.public))  # the child is not placed yet
    passed: list[list[bytes]] = []

    async def send_up(frames: list[bytes]) -> None:
        passed.append(frames)

    running = asyncio.create_task(relay.run(send_up))
    child = context.socket(zmq.DEALER)
    child.setsockopt(zmq.LINGER, 0)
    child_keys.apply_client(child, server_key=relay_keys.public)
    child.connect(f"tcp://127.0.0.1:{port}")
    try:
        # before the relay knows the child: neither relayed nor served, but connected
        await child.send_multipart(encode(Heartbeat(seq=1)))
        await child.send_multipart(encode(ChunkRequest(sha256=SHA, offset=0, length=4,
                                                       peer=True)))
        for _ in range(100):
            if relay.dropped == 2:
                break
            await asyncio.sleep(0.02)
        assert relay.dropped == 2 and passed == []
        assert not await child.poll(timeout=300)  # no chunk for an unknown key

        relay.admit(topology(relay_keys.public, child_keys.public))
        await child.send_multipart(encode(Heartbeat(seq=2)))  # same connection
        await child.send_multipart(encode(ChunkRequest(sha256=SHA, offset=0, length=4,
                                                       peer=True)))
        assert await child.poll(timeout=5000)
        message, data = decode(await child.recv_multipart())
        assert message.type == "chunk" and data == b"GGUF"
        for _ in range(100):
            if passed:
                break
            await asyncio.sleep(0.02)
        (frames,) = passed
        assert frames[0] == RELAY and frames[2] == child_keys.public
        assert decode(frames[3:]) == (Heartbeat(seq=2), None)
        assert relay.dropped == 2
    finally:
        running.cancel()
        child.close(linger=0)
        relay.close()
        context.destroy(linger=0)


def test_a_relay_passes_on_only_what_placed_nodes_send(tmp_path: Path) -> None:
    asyncio.run(_exercise(tmp_path))
