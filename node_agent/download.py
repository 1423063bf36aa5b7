"""Fetching a model into the node's store: striped, windowed, resumable, verified.

`fetch_model` cuts the file into 1 MiB chunks; chunk i belongs to stripe i mod s, and
each stripe comes from its own source (`relay.chunk_sources`: this node's parent in that
stripe tree, or the coordinator). Stripes are fetched independently, each with its own
window of chunks in flight, and chunks are written at their offsets as they come, so a
stripe whose source lags does not hold up the others (nor, through this node, their
subtrees). When a peer refuses a range, or no chunk of its stripe arrives for
`stall_s`, that peer is blamed and the fetch goes on without it, asking again only for
the chunks it does not hold; a topology change that moves a stripe to another source
does the same. The coordinator is given `HUB_PATIENCE` times longer: it serves every
node it is the source for from one uplink (a star's whole fleet), so a chunk may wait
there a while, and asking again would only queue the same bytes twice. Requests lost
with a session (a new route, a reconnect) are sent again when `resend()` says so. The
finished file is checked against its sha256 before it is moved into place
(`ModelStore.finish`).

`PeerLinks` are the agent's DEALER sockets to other nodes' relays, opened on first use
and closed when no fetch needs them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
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
CHUNK_WINDOW = 8  # chunks in flight per fetch, shared by its stripes (at least 4 each)
HUB_PATIENCE = 5  # × stall_s before a stripe from the coordinator counts as stalled


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
                      blame: Callable[[Upstream], None],
                      resend: Callable[[], bool] = lambda: False) -> None:
    """Download `spec`'s file until it is whole and verified.

    `sources()` gives the source of each stripe now; requests go out by `send`, and
    answers arrive on `arrivals`; `replan` is set when the sources may have changed, or
    when requests may have been lost (then `resend()` is true).
    Raises ModelStoreError when the file cannot be stored or fails its sha256.
    """
    chunks = [(offset, min(CHUNK_BYTES, spec.size - offset))
              for offset in range(0, spec.size, CHUNK_BYTES)]
    while missing := [c for c in chunks
                      if not store.holds(spec.sha256, offset=c[0], length=c[1])]:
        while not arrivals.empty():  # answers to requests of an earlier attempt
            arrivals.get_nowait()
        replan.clear()
        plan = sources()
        try:
            await _Attempt(spec, store=store, plan=plan, stall_s=stall_s).run(
                missing, sources=sources, send=send, arrivals=arrivals, replan=replan,
                progress=progress, resend=resend)
        except SourceFailed as failed:
            log.warning("download of %s: %s; resuming from elsewhere", spec.model, failed)
            blame(failed.source)
        except _Replanned:
            log.info("download of %s: the sources changed; resuming", spec.model)
    store.finish(spec.sha256)


class _Attempt:
    """One pass over the missing chunks with one plan of sources."""

    def __init__(self, spec: WorkerSpec, *, store: ModelStore, plan: tuple[Upstream, ...],
                 stall_s: float) -> None:
        self.spec, self.store, self.plan, self.stall_s = spec, store, plan, stall_s
        self.window = max(4, CHUNK_WINDOW // len(plan))
        self.todo: list[deque[tuple[int, int]]] = [deque() for _ in plan]
        self.inflight: dict[int, tuple[int, int]] = {}  # offset -> (stripe, length)
        self.flying = [0] * len(plan)
        self.heard = [time.monotonic()] * len(plan)  # last chunk of each stripe
        self.patience = [stall_s * (HUB_PATIENCE if source.position == ROOT else 1)
                         for source in plan]

    async def run(self, missing: list[tuple[int, int]], *,
                  sources: Callable[[], tuple[Upstream, ...]],
                  send: Callable[[Upstream, ChunkRequest], Awaitable[object]],
                  arrivals: asyncio.Queue[Arrival], replan: asyncio.Event,
                  progress: Callable[[int], None], resend: Callable[[], bool]) -> None:
        for offset, length in missing:
            self.todo[(offset // CHUNK_BYTES) % len(self.plan)].append((offset, length))
        left = len(missing)
        while left:
            await self._request(send)
            self._check_stalls()
            arrival = await _next(arrivals, replan, self._quiet_for())
            if arrival is None:
                if replan.is_set():
                    if resend() or sources() != self.plan:
                        raise _Replanned
                    replan.clear()
                continue
            message, data = arrival.message, arrival.data
            wanted = self.inflight.get(message.offset)
            if isinstance(message, ChunkUnavailable):
                if wanted is not None and self.plan[wanted[0]] == arrival.source:
                    raise SourceFailed(arrival.source, f"{_name(arrival.source)} cannot "
                                       "serve the model")
                continue  # a late refusal of a request of an earlier attempt
            if wanted is None or data is None or len(data) != wanted[1] \
                    or message.total_size != self.spec.size:
                continue  # a late answer from an earlier attempt, or a wrong one
            stripe, _ = self.inflight.pop(message.offset)
            self.flying[stripe] -= 1
            self.heard[stripe] = time.monotonic()
            progress(self.store.write_chunk(self.spec.sha256, offset=message.offset,
                                            data=data, total_size=self.spec.size))
            left -= 1

    async def _request(self, send: Callable[[Upstream, ChunkRequest], Awaitable[object]]
                       ) -> None:
        """Fill each stripe's window."""
        for stripe, source in enumerate(self.plan):
            if not self.flying[stripe]:
                self.heard[stripe] = time.monotonic()  # its clock starts with its requests
            while self.flying[stripe] < self.window and self.todo[stripe]:
                offset, length = self.todo[stripe].popleft()
                await send(source, ChunkRequest(sha256=self.spec.sha256, offset=offset,
                                                length=length, peer=source.position != ROOT))
                self.inflight[offset] = (stripe, length)
                self.flying[stripe] += 1

    def _quiet_for(self) -> float:
        """How long until the quietest stripe that waits for chunks counts as stalled."""
        now = time.monotonic()
        left = [self.patience[s] - (now - self.heard[s]) for s in range(len(self.plan))
                if self.flying[s]]
        return max(0.01, min(left)) if left else self.stall_s

    def _check_stalls(self) -> None:
        now = time.monotonic()
        for stripe, source in enumerate(self.plan):
            if self.flying[stripe] and now - self.heard[stripe] >= self.patience[stripe]:
                raise SourceFailed(source, f"no chunk from {_name(source)} for "
                                   f"{self.patience[stripe]:.0f} s")


async def _next(arrivals: asyncio.Queue[Arrival], replan: asyncio.Event, wait_s: float
                ) -> Arrival | None:
    """The next arrival; None when `replan` is set first or nothing came for `wait_s`."""
    if replan.is_set():
        return None
    getter = asyncio.ensure_future(arrivals.get())
    changed = asyncio.ensure_future(replan.wait())
    try:
        await asyncio.wait({getter, changed}, timeout=wait_s,
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
