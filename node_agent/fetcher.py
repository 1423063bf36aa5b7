"""The node's model fetches: where each stripe comes from, the links to peers, and the
chunk server that lets this node's peers fetch from it in turn.

The agent starts one `fetch` per wanted model that is not stored; chunks that arrive
over the session or a peer link are handed to `arrived`, and a new overlay topology to
`topology_changed`, which makes every fetch re-check its sources.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable

import zmq.asyncio

from node_agent.chunk_server import ChunkServer
from node_agent.curve import KeyPair
from node_agent.download import Arrival, PeerLinks, fetch_model
from node_agent.model_store import ModelStore
from node_agent.protocol import ChunkRequest, Topology, WorkerSpec
from node_agent.relay import HUB, Upstream, chunk_sources

AVOID_FOR_S = 30.0  # a peer that failed to serve is passed over this long


class ModelFetcher:
    """Fetches models into `store` down the stripe trees of the current `topology()`."""

    def __init__(self, *, store: ModelStore, context: zmq.asyncio.Context, keys: KeyPair,
                 send_session: Callable[[ChunkRequest], Awaitable[object]],
                 topology: Callable[[], Topology | None],
                 dead: Callable[[], frozenset[int]], wait_s: float) -> None:
        self.store = store
        self.server = ChunkServer(store, wait_s=wait_s)
        self._send_session = send_session
        self._topology = topology
        self._dead = dead
        self._links = PeerLinks(context=context, keys=keys, deliver=self.arrived)
        self._arrivals: dict[str, asyncio.Queue[Arrival]] = {}
        self._replans: dict[str, asyncio.Event] = {}
        self._avoid: dict[int, float] = {}  # peers that failed to serve, until when
        self._resend: set[str] = set()  # fetches whose session requests may be lost
        self.progress: dict[str, int] = {}  # bytes held of each model being fetched

    def want(self, specs: Iterable[WorkerSpec]) -> None:
        """The models the coordinator wants on this node (peers may ask for them)."""
        self.server.want({s.sha256: s.size for s in specs})

    def arrived(self, arrival: Arrival) -> None:
        if (queue := self._arrivals.get(arrival.message.sha256)) is not None:
            queue.put_nowait(arrival)

    def topology_changed(self) -> None:
        for replan in self._replans.values():
            replan.set()

    def session_changed(self) -> None:
        """The session moved or was made again: requests sent over the old one may be
        lost, so every fetch asks again for what it still misses."""
        self._resend |= set(self._replans)
        self.topology_changed()

    def sources(self) -> tuple[Upstream, ...]:
        now = time.monotonic()
        avoid = {p for p, until in self._avoid.items() if until > now}
        return chunk_sources(self._topology(), down=self._dead() | avoid)

    async def fetch(self, spec: WorkerSpec, *, stall_s: float) -> None:
        """Fetch `spec`'s file until it is stored and verified (ModelStoreError if not)."""
        sha = spec.sha256
        self._arrivals[sha], self._replans[sha] = asyncio.Queue(), asyncio.Event()

        def progress(offset: int) -> None:
            self.progress[sha] = offset
            self.server.arrived(sha)

        try:
            await fetch_model(spec, store=self.store, send=self._request, sources=self.sources,
                              arrivals=self._arrivals[sha], replan=self._replans[sha],
                              blame=self._blame, stall_s=stall_s, progress=progress,
                              resend=lambda: self._take_resend(sha))
            self.server.done(sha)
        finally:
            del self._arrivals[sha], self._replans[sha]
            self._resend.discard(sha)
            self.progress.pop(sha, None)
            if not self._arrivals:
                self._links.close()

    def _take_resend(self, sha256: str) -> bool:
        if sha256 in self._resend:
            self._resend.discard(sha256)
            return True
        return False

    async def _request(self, source: Upstream, request: ChunkRequest) -> None:
        if source.endpoint is None:  # the coordinator, over the session
            await self._send_session(request)
        else:
            await self._links.send(source, request)

    def _blame(self, source: Upstream) -> None:
        """A peer failed to serve a chunk: take its stripe elsewhere for a while (the
        session's route is not changed: that has its own liveness)."""
        if source != HUB:
            self._avoid[source.position] = time.monotonic() + AVOID_FOR_S

    def close(self) -> None:
        self._links.close()
