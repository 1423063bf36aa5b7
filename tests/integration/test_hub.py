"""The hub in process, with real ZeroMQ peers: liveness after a stalled loop, routes,
draining."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path

import pytest
import zmq
import zmq.asyncio

from coordinator import store as st
from coordinator.hub import QUEUE_VIEW_S, Hub
from coordinator.store import Store
from node_agent import curve
from node_agent.hardware import hardware_facts
from node_agent.protocol import (
    PROTOCOL_VERSION,
    RELAY,
    Heartbeat,
    Register,
    WorkRequest,
    encode,
)
from tests.support.peers import registering_dealer

pytestmark = pytest.mark.integration


def _peer_in_a_thread(port: int, server_key: bytes, *, welcomed: threading.Event,
                      stop: threading.Event) -> None:
    """Register as "n1" and heartbeat every 0.1 s until `stop`, on a thread of its own (a
    node is its own machine: the hub's blocked loop does not block it)."""
    context = zmq.Context()
    peer = registering_dealer(context, port=port, server_key=server_key, name="n1")
    seq = 0
    while not stop.is_set():
        while peer.poll(0):
            if json.loads(peer.recv_multipart()[0])["type"] == "welcome":
                welcomed.set()
        peer.send_multipart(encode(Heartbeat(seq=seq)))
        seq += 1
        stop.wait(0.1)
    context.destroy(linger=0)


def test_a_stalled_hub_does_not_drop_its_peers(tmp_path: Path) -> None:
    """The hub's loop blocked far past liveness × interval while a node keeps talking:
    the hub reads what the node sent meanwhile before it judges, and keeps it."""
    async def scenario() -> tuple[int, int]:
        context = zmq.asyncio.Context()
        keys = curve.load_or_create(tmp_path, "hub")
        hub = Hub(store=Store(f"sqlite:///{tmp_path / 's.db'}"), token="t", keys=keys,
                  bind="tcp://127.0.0.1:0", heartbeat_interval_s=0.2, liveness=3,
                  context=context)
        running = asyncio.create_task(hub.run())
        welcomed, stop = threading.Event(), threading.Event()
        node = threading.Thread(target=_peer_in_a_thread, args=(hub.port, keys.public),
                                kwargs={"welcomed": welcomed, "stop": stop})
        node.start()
        try:
            assert await asyncio.to_thread(welcomed.wait, 20), "the hub did not welcome n1"
            await asyncio.sleep(0.5)
            before = len(hub.peers)
            time.sleep(2.0)  # block the whole loop: far past liveness x interval (0.6 s)
            await asyncio.sleep(1.0)  # the hub ticks again and reads what arrived
            return before, len(hub.peers)
        finally:
            stop.set()
            await asyncio.to_thread(node.join)
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
            context.term()

    before, after = asyncio.run(scenario())
    assert (before, after) == (1, 1)


def test_a_node_that_moves_to_another_route_gets_the_pushed_state_again(tmp_path: Path
                                                                        ) -> None:
    """What the hub pushed while a node was moving may be lost on the old route, so on
    the first message by the new one it sends the desired workers and topology again."""
    async def scenario() -> list[str]:
        context = zmq.asyncio.Context()
        keys = curve.load_or_create(tmp_path, "hub")
        hub = Hub(store=Store(f"sqlite:///{tmp_path / 's.db'}"), token="t", keys=keys,
                  bind="tcp://127.0.0.1:0", heartbeat_interval_s=10, context=context)
        running = asyncio.create_task(hub.run())
        sockets = []
        pairs = {name: curve.KeyPair(*zmq.curve_keypair()) for name in ("relay", "child")}
        for name, pair in pairs.items():
            sock = context.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.ROUTING_ID, name.encode())
            pair.apply_client(sock, server_key=keys.public)
            sock.connect(f"tcp://127.0.0.1:{hub.port}")
            await sock.send_multipart(encode(Register(
                protocol=PROTOCOL_VERSION, token="t", name=name, facts=hardware_facts(),
                relay="127.0.0.1:1" if name == "relay" else None)))
            sockets.append(sock)
        relay, child = sockets
        try:
            for sock in sockets:  # welcome, desired workers, topologies
                while await sock.poll(timeout=300):
                    await sock.recv_multipart()
            # the child now speaks through the relay, which vouches for its key
            await relay.send_multipart([RELAY, b"child", pairs["child"].public,
                                        *encode(Heartbeat(seq=1))])
            resent = []
            while await relay.poll(timeout=1000):
                frames = await relay.recv_multipart()
                if frames[:2] == [RELAY, b"child"]:
                    resent.append(json.loads(frames[2])["type"])
            return resent
        finally:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
            for sock in sockets:
                sock.close()
            context.term()

    assert asyncio.run(scenario()) == ["desired_workers", "topology"]


def test_a_draining_node_gets_no_new_leases_until_it_is_resumed(tmp_path: Path) -> None:
    async def scenario() -> list[str]:
        context = zmq.asyncio.Context()
        keys = curve.load_or_create(tmp_path, "hub")
        store = Store(f"sqlite:///{tmp_path / 's.db'}")
        hub = Hub(store=store, token="t", keys=keys, bind="tcp://127.0.0.1:0",
                  heartbeat_interval_s=10, context=context)
        running = asyncio.create_task(hub.run())
        peer = context.socket(zmq.DEALER)
        peer.setsockopt(zmq.LINGER, 0)
        curve.KeyPair(*zmq.curve_keypair()).apply_client(peer, server_key=keys.public)
        peer.connect(f"tcp://127.0.0.1:{hub.port}")
        replies = []
        st.add_model(store, name="m", sha256="0" * 64, size=1, path=str(tmp_path / "m"),
                     threads=1, n_ctx=128)
        try:
            await peer.send_multipart(encode(Register(
                protocol=PROTOCOL_VERSION, token="t", name="n1", facts=hardware_facts())))
            while await peer.poll(timeout=300):
                await peer.recv_multipart()
            st.create_job(store, name="j", spec={}, items=[st.NewWorkItem(
                model="m", task="classification", dataset="d", item_key="k", repeat=0,
                prompt="p", reference={}, params={"stop": [], "max_tokens": 4,
                                                  "temperature": 0.0, "seed": 1})])
            (node_id,) = [s.node_id for s in hub.peers.values()]
            for draining in (True, False):
                (hub.draining.add if draining else hub.draining.discard)(node_id)
                for _ in range(40):  # the scheduler sees a new job within QUEUE_VIEW_S
                    await peer.send_multipart(encode(WorkRequest(model="m", slots=1)))
                    reply = json.loads((await asyncio.wait_for(
                        peer.recv_multipart(), 10))[0])["type"]
                    if draining or reply == "work_lease":
                        break
                    await asyncio.sleep(QUEUE_VIEW_S)
                replies.append(reply)
            return replies
        finally:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
            peer.close()
            context.term()

    assert asyncio.run(scenario()) == ["no_work", "work_lease"]
