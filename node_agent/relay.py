"""Relaying along the overlay: envelopes, the choice of upstream, and the relay server.

Traffic between an agent and the coordinator goes hop by hop along the overlay (the
tree, with De Bruijn shortcuts around nodes that are down). Relays are stateless: going
up, a relay prepends `[RELAY, child routing id, child public key]` to what its child
sent; going down, the hub prepends `[RELAY, routing id]` for every hop below the first,
and each relay pops one and passes the rest to that child. The hub learns each session's
path from the last message it got, so a node that moves to another route is reached on
it from then on, and no relay keeps routing state.

Relays are CURVE servers that admit only the keys of placed fleet nodes; the hub trusts
relayed frames only from live, pinned nodes, and takes the originating key a relay
vouches for (which that relay saw in its own CURVE handshake).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import zmq
import zmq.asyncio
from zmq.auth.asyncio import AsyncioAuthenticator

from node_agent.curve import KeyPair
from node_agent.errors import ProtocolError
from node_agent.protocol import RELAY, Topology
from topology import ROOT, Overlay

log = logging.getLogger("slmfleet.relay")

MAX_HOPS = 32


def unwrap(direct: bytes, direct_key: bytes, frames: list[bytes]
           ) -> tuple[list[bytes], bytes, list[bytes]]:
    """(path of routing ids from the hub's neighbour to the origin, the origin's key, the
    message frames) of what arrived from `direct`."""
    path, key = [direct], direct_key
    while frames and frames[0] == RELAY:
        if len(frames) < 4:
            raise ProtocolError("a relay envelope needs a routing id, a key and a message")
        path.append(frames[1])
        key = frames[2]
        frames = frames[3:]
        if len(path) > MAX_HOPS:
            raise ProtocolError(f"more than {MAX_HOPS} relay hops")
    return path, key, frames


def wrap_down(path: list[bytes], frames: list[bytes]) -> list[bytes]:
    """Frames for a ROUTER to send `frames` along `path` (first hop first)."""
    envelope = [path[0]]
    for hop in path[1:]:
        envelope += [RELAY, hop]
    return envelope + frames


@dataclass(frozen=True)
class Upstream:
    """Where an agent sends toward the coordinator: the hub itself, or a relay."""

    position: int  # 0: the hub
    endpoint: str | None = None
    public_key: bytes | None = None


HUB = Upstream(position=ROOT)


def choose_upstream(topology: Topology | None, *, down: frozenset[int]) -> Upstream:
    """The next hop toward the root along the overlay, avoiding nodes the coordinator says
    are down and those this node found dead; the hub directly when there is no overlay
    yet, no route, or the next hop has no relay endpoint."""
    if topology is None:
        return HUB
    peers = {p.position: p for p in topology.nodes}
    if len(peers) < topology.position:
        return HUB
    overlay = Overlay(nodes=max(peers), fanout=topology.fanout)
    unavailable = down | {p for p, peer in peers.items() if not peer.up or not peer.relay}
    hop = overlay.next_hop(topology.position, ROOT, down=unavailable - {topology.position})
    if hop is None or hop == ROOT:
        return HUB
    peer = peers[hop]
    return Upstream(position=hop, endpoint=peer.relay, public_key=peer.public_key.encode())


class _FleetKeys:
    """ZAP credentials provider for a relay: only placed fleet nodes may connect."""

    def __init__(self) -> None:
        self.allowed: set[bytes] = set()

    def callback(self, _domain: str, key: bytes) -> bool:
        return key in self.allowed


class RelayServer:
    """The ROUTER this agent's overlay children connect to."""

    def __init__(self, *, context: zmq.asyncio.Context, keys: KeyPair, bind: str) -> None:
        self._gate = _FleetKeys()
        self._auth = AsyncioAuthenticator(context)
        self._auth.start()
        self._auth.configure_curve_callback(domain="*", credentials_provider=self._gate)
        self.socket = context.socket(zmq.ROUTER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.ROUTER_MANDATORY, 0)
        keys.apply_server(self.socket)
        self.socket.bind(f"tcp://{bind}")

    def admit(self, topology: Topology) -> None:
        self._gate.allowed = {p.public_key.encode() for p in topology.nodes}

    async def run(self, send_up: Callable[[list[bytes]], object]) -> None:
        """Pass everything children send up, enveloped with who sent it."""
        while True:
            frames = await self.socket.recv_multipart(copy=False)
            child, key = frames[0].bytes, str(frames[-1].get("User-Id") or "").encode()
            await send_up([RELAY, child, key, *(f.bytes for f in frames[1:])])  # type: ignore[misc]

    async def send_down(self, frames: list[bytes]) -> None:
        """`frames` = [child routing id, *rest], as popped from a downward envelope."""
        try:
            await self.socket.send_multipart(frames, flags=zmq.NOBLOCK)
        except zmq.ZMQError as exc:  # the child is gone: it will find another route
            log.debug("dropped a message for a child: %s", exc)

    def close(self) -> None:
        self.socket.close(linger=0)
        self._auth.stop()
