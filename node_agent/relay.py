"""Relaying along the overlay: envelopes, the choice of upstream, and the relay server.

Traffic between an agent and the coordinator goes hop by hop along the overlay (the
tree, with De Bruijn shortcuts around nodes that are down). Relays are stateless: going
up, a relay prepends `[RELAY, child routing id, child public key]` to what its child
sent; going down, the hub prepends `[RELAY, routing id]` for every hop below the first,
and each relay pops one and passes the rest to that child. The hub learns each session's
path from the last message it got, so a node that moves to another route is reached on
it from then on, and no relay keeps routing state.

Relays are CURVE servers that pass on only what the keys of placed fleet nodes send: the
handshake completes for any key (as at the hub), so that a node which heard of its new
relay before the relay heard of it is not shut out for good (ZeroMQ does not reconnect
after a refused handshake), and each message is then checked against the keys of the
relay's latest topology; anything else is dropped and counted. The hub trusts relayed
frames only from live, pinned nodes, and takes the originating key a relay vouches for
(which that relay saw in its own CURVE handshake).

A relay also serves model chunks that a peer asks of it directly (`peer` chunk requests):
model files travel down striped trees (`topology.stripes`), and `chunk_sources` says
where this node takes each stripe from.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import zmq
import zmq.asyncio
from zmq.auth.asyncio import AsyncioAuthenticator

from node_agent.chunk_server import ChunkServer
from node_agent.curve import KeyPair
from node_agent.errors import ProtocolError
from node_agent.protocol import (
    RELAY,
    Chunk,
    ChunkRequest,
    ChunkUnavailable,
    Topology,
    decode,
    encode,
)
from topology import ROOT, Overlay
from topology.stripes import stripe_sources

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
    """Where an agent sends to: the hub itself, or another node's relay."""

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


def chunk_sources(topology: Topology | None, *, down: frozenset[int]) -> tuple[Upstream, ...]:
    """Where this node takes each stripe of a model from: its parent in that stripe tree,
    passing over nodes that are down, found dead, or do not relay (they cannot serve); the
    coordinator (over the session) for the stripe heads, a star, or without a topology."""
    if topology is None:
        return (HUB,)
    peers = {p.position: p for p in topology.nodes}
    nodes = max(peers, default=0)
    if topology.position not in peers:
        return (HUB,)
    unavailable = down | {p for p in range(1, nodes + 1)
                          if p not in peers or not peers[p].up or not peers[p].relay}
    chosen = stripe_sources(topology.position, nodes=nodes, fanout=topology.fanout,
                            down=unavailable - {topology.position})
    return tuple(HUB if p == ROOT else
                 Upstream(position=p, endpoint=peers[p].relay,
                          public_key=peers[p].public_key.encode()) for p in chosen)


class _AnyKey:
    """ZAP credentials provider for a relay: the handshake completes for any key (and
    ZeroMQ then tags each message with it); messages are filtered by key afterwards."""

    def callback(self, _domain: str, _key: bytes) -> bool:
        return True


class RelayServer:
    """The ROUTER this agent's overlay children (and peers fetching chunks) connect to."""

    def __init__(self, *, context: zmq.asyncio.Context, keys: KeyPair, bind: str,
                 chunks: ChunkServer | None = None) -> None:
        self._chunks = chunks
        self._serving: set[asyncio.Task[None]] = set()
        self.allowed: set[bytes] = set()  # the keys of placed fleet nodes
        self.dropped = 0  # messages from other keys
        self._auth = AsyncioAuthenticator(context)
        self._auth.start()
        self._auth.configure_curve_callback(domain="*", credentials_provider=_AnyKey())
        self.socket = context.socket(zmq.ROUTER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.ROUTER_MANDATORY, 0)
        keys.apply_server(self.socket)
        self.socket.bind(f"tcp://{bind}")

    def admit(self, topology: Topology) -> None:
        self.allowed = {p.public_key.encode() for p in topology.nodes}

    async def run(self, send_up: Callable[[list[bytes]], Awaitable[object]]) -> None:
        """Serve peers' chunk requests; pass everything else children send up, enveloped
        with who sent it."""
        while True:
            frames = await self.socket.recv_multipart(copy=False)
            child, key = frames[0].bytes, str(frames[-1].get("User-Id") or "").encode()
            if key not in self.allowed:
                self.dropped += 1
                log.debug("dropped a message from a key that is not a placed node")
                continue
            body = [f.bytes for f in frames[1:]]
            request = self._peer_request(body)
            if request is not None:
                task = asyncio.create_task(self._serve(child, request))
                self._serving.add(task)
                task.add_done_callback(self._serving.discard)
                continue
            await send_up([RELAY, child, key, *body])

    def _peer_request(self, body: list[bytes]) -> ChunkRequest | None:
        if self._chunks is None or len(body) != 1 or b'"chunk_request"' not in body[0][:32]:
            return None
        try:
            message, _ = decode(body)
        except ProtocolError:
            return None  # the hub answers it with the reason
        return message if isinstance(message, ChunkRequest) and message.peer else None

    async def _serve(self, child: bytes, request: ChunkRequest) -> None:
        assert self._chunks is not None
        found = await self._chunks.read(request)
        if found is None:
            reply = encode(ChunkUnavailable(sha256=request.sha256, offset=request.offset))
        else:
            data, size = found
            reply = encode(Chunk(sha256=request.sha256, offset=request.offset,
                                 total_size=size), data)
        try:
            await self.socket.send_multipart([child, *reply], flags=zmq.NOBLOCK)
        except zmq.ZMQError as exc:  # the peer is gone or flooded: it asks again elsewhere
            log.debug("dropped a chunk for a peer: %s", exc)

    async def send_down(self, frames: list[bytes]) -> None:
        """`frames` = [child routing id, *rest], as popped from a downward envelope."""
        try:
            await self.socket.send_multipart(frames, flags=zmq.NOBLOCK)
        except zmq.ZMQError as exc:  # the child is gone: it will find another route
            log.debug("dropped a message for a child: %s", exc)

    def close(self) -> None:
        for task in self._serving:
            task.cancel()
        self.socket.close(linger=0)
        self._auth.stop()
