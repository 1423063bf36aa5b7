"""Fetching a model into the node's store: striped, windowed, resumable, verified.

`fetch_model` cuts the file into 1 MiB chunks; chunk i belongs to stripe i mod s, and
each stripe comes from its own source (`relay.chunk_sources`: this node's parent in that
stripe tree, or the coordinator). Up to 8 chunks are in flight or held out of order;
they are appended to the part file in order. When a source refuses a range, or chunks
stop coming from it (a dead peer, a broken link), that source is blamed and the fetch
resumes from the bytes on disk with the sources chosen again; a topology change that
moves a stripe to another source does the same. The finished file is checked against
its sha256 before it is moved into place (`ModelStore.finish`).

`PeerLinks` are the agent's DEALER sockets to other nodes' relays, opened on first use
and closed when no fetch needs them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import zmq
import zmq.asyncio

from node_agent.curve import KeyPair
from node_agent.errors import ProtocolError
from node_agent.model_store import ModelStore
from node_agent.protocol import (
    Chunk,
    ChunkRequest,
    ChunkUnavailable,
    WorkerSpec,
    decode,
    encode,
)
from node_agent.relay import Upstream
from topology import ROOT

log = logging.getLogger("slmfleet.agent")

CHUNK_BYTES = 1 << 20
CHUNK_WINDOW = 8



@dataclass(frozen=True)
class Arrival:
    """An answer to a chunk request, and who sent it."""

    source: Upstream
    message: Chunk | ChunkUnavailable
    data: bytes | None = None


class SourceFailed(Exception):
    """A source refused a range or fell silent; the fetch resumes without it."""

    def __init__(self, source: Upstream, why: str) -> None:
        super().__init__(why)
        self.source = source


class _Replanned(Exception):
    """The sources changed under a fetch; it resumes with the new ones."""


async def fetch_model(spec: WorkerSpec, *, store: ModelStore,
                      sources: Callable[[], tuple[Upstream, ...]],
                      send: Callable[[Upstream, ChunkRequest], Awaitable[object]],
                      arrivals: asyncio.Queue[Arrival], replan: asyncio.Event,
                      stall_s: float, progress: Callable[[int], None],
                      blame: Callable[[Upstream], None]) -> None:
    """Download `spec`'s file until it is whole and verified.

    `sources()` gives the source of each stripe now; requests go out by `send`, and
    answers arrive on `arrivals`; `replan` is set when the sources may have changed.
    Raises ModelStoreError when the file cannot be stored or fails its sha256.
    """
    offset = store.received(spec.sha256)
    while offset < spec.size:
        while not arrivals.empty():  # answers to requests of an earlier attempt
            arrivals.get_nowait()
        replan.clear()
        plan = sources()
        try:
            await _attempt(spec, store=store, plan=plan, sources=sources, send=send,
                           arrivals=arrivals, replan=replan, stall_s=stall_s,
                           progress=progress)
        except SourceFailed as failed:
            log.warning("download of %s: %s; resuming from elsewhere", spec.model, failed)
            blame(failed.source)
        except _Replanned:
            log.info("download of %s: the sources changed; resuming", spec.model)
        offset = store.received(spec.sha256)
    store.finish(spec.sha256)


async def _attempt(spec: WorkerSpec, *, store: ModelStore, plan: tuple[Upstream, ...],
                   sources: Callable[[], tuple[Upstream, ...]],
                   send: Callable[[Upstream, ChunkRequest], Awaitable[object]],
                   arrivals: asyncio.Queue[Arrival], replan: asyncio.Event, stall_s: float,
                   progress: Callable[[int], None]) -> None:
    offset = requested = store.received(spec.sha256)
    inflight: dict[int, tuple[Upstream, int]] = {}  # offset -> (source, length)
    held: dict[int, bytes] = {}  # arrived ahead of the bytes on disk
    while offset < spec.size:
        while len(inflight) + len(held) < CHUNK_WINDOW and requested < spec.size:
            length = min(CHUNK_BYTES, spec.size - requested)
            source = plan[(requested // CHUNK_BYTES) % len(plan)]
            await send(source, ChunkRequest(sha256=spec.sha256, offset=requested,
                                            length=length, peer=source.position != ROOT))
            inflight[requested] = (source, length)
            requested += length
        arrival = await _next(arrivals, replan, stall_s)
        if arrival is None:
            if replan.is_set():
                if sources() != plan:
                    raise _Replanned
                replan.clear()
                continue
            source, _ = inflight[min(inflight)]
            raise SourceFailed(source, f"no chunk from {_name(source)} for {stall_s:.0f} s")
        chunk, data = arrival.message, arrival.data
        wanted = inflight.get(chunk.offset)
        if isinstance(chunk, ChunkUnavailable):
            if wanted is not None and wanted[0] == arrival.source:
                raise SourceFailed(arrival.source, f"{_name(arrival.source)} cannot serve "
                                   "the model")
            continue  # a late refusal of a request of an earlier attempt
        if wanted is None or data is None or len(data) != wanted[1] \
                or chunk.total_size != spec.size:
            continue  # a late answer from an earlier attempt, or a wrong one
        del inflight[chunk.offset]
        held[chunk.offset] = data
        while offset in held:
            offset = store.write_chunk(spec.sha256, offset=offset, data=held.pop(offset),
                                       total_size=spec.size)
            progress(offset)


async def _next(arrivals: asyncio.Queue[Arrival], replan: asyncio.Event, stall_s: float
                ) -> Arrival | None:
    """The next arrival; None when `replan` is set first or nothing came for `stall_s`."""
    if replan.is_set():
        return None
    getter = asyncio.ensure_future(arrivals.get())
    changed = asyncio.ensure_future(replan.wait())
    try:
        await asyncio.wait({getter, changed}, timeout=stall_s,
                           return_when=asyncio.FIRST_COMPLETED)
    finally:
        changed.cancel()
        if not getter.done():
            getter.cancel()
    return getter.result() if getter.done() and not getter.cancelled() else None


def _name(source: Upstream) -> str:
    return "the coordinator" if source.position == ROOT else f"node {source.position}"


class PeerLinks:
    """DEALER sockets to other nodes' relays, for chunk requests; answers are handed to
    `deliver`."""

    def __init__(self, *, context: zmq.asyncio.Context, keys: KeyPair,
                 deliver: Callable[[Arrival], None]) -> None:
        self._context = context
        self._keys = keys
        self._deliver = deliver
        self._links: dict[Upstream, tuple[zmq.asyncio.Socket, asyncio.Task[None]]] = {}

    async def send(self, peer: Upstream, request: ChunkRequest) -> None:
        if peer not in self._links:
            self._links[peer] = self._open(peer)
        sock, _ = self._links[peer]
        with contextlib.suppress(zmq.Again):  # a full queue: the fetch sees a stall
            await sock.send_multipart(encode(request), flags=zmq.NOBLOCK)

    def _open(self, peer: Upstream) -> tuple[zmq.asyncio.Socket, asyncio.Task[None]]:
        assert peer.endpoint is not None and peer.public_key is not None
        sock = self._context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        self._keys.apply_client(sock, server_key=peer.public_key)
        sock.connect(f"tcp://{peer.endpoint}")
        return sock, asyncio.create_task(self._receive(peer, sock),
                                         name=f"peer link {peer.position}")

    async def _receive(self, peer: Upstream, sock: zmq.asyncio.Socket) -> None:
        while True:
            frames = await sock.recv_multipart()
            try:
                message, data = decode(frames)
            except ProtocolError as exc:
                log.warning("dropped a bad message from node %d: %s", peer.position, exc)
                continue
            if isinstance(message, Chunk | ChunkUnavailable):
                self._deliver(Arrival(source=peer, message=message, data=data))
            else:
                log.warning("ignored a %s message from node %d", message.type, peer.position)

    def close(self) -> None:
        for sock, task in self._links.values():
            task.cancel()
            sock.close(linger=0)
        self._links.clear()
