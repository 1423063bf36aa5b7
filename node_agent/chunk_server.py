"""Serving model chunks to peers: what makes distribution down the stripe trees pipelined.

A node that fetches a model is also the source of one stripe for its children in that
stripe tree. It answers a peer's chunk request from its stored file or from the part
file still arriving (chunks land there in any order); a request for bytes it has not
received yet waits until they land (so it forwards chunk i while it receives chunk i+1),
up to `wait_s`; so does a request for a model the coordinator wants on this node that it
has not started to fetch yet. A request for any other model is refused at once (after a
short grace for the coordinator's word to arrive), so the peer goes elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib

from node_agent.model_store import ModelStore
from node_agent.protocol import ChunkRequest

UNKNOWN_GRACE_S = 2.0


class ChunkServer:
    """Reads ranges of this node's models for peers, waiting on downloads in progress."""

    def __init__(self, store: ModelStore, *, wait_s: float) -> None:
        self.store = store
        self.wait_s = wait_s
        self._arrivals: dict[str, asyncio.Event] = {}  # models being fetched now
        self._sizes: dict[str, int] = {}  # their sizes
        self._wanted = asyncio.Event()  # set when the wanted models change
        self.served_bytes = 0

    def want(self, models: dict[str, int]) -> None:
        """The models (sha256: size) this node is to hold: requests for those it does not
        hold yet wait for them; requests for models no longer wanted are refused."""
        for sha256, size in models.items():
            if not self.store.has(sha256):
                self._arrivals.setdefault(sha256, asyncio.Event())
                self._sizes[sha256] = size
        for sha256 in [s for s in self._arrivals if s not in models]:
            self.done(sha256)
        self._wanted.set()
        self._wanted = asyncio.Event()

    def arrived(self, sha256: str) -> None:
        """More of `sha256` is on disk: wake the requests waiting for it."""
        event = self._arrivals.get(sha256)
        if event is not None:
            event.set()
            self._arrivals[sha256] = asyncio.Event()

    def done(self, sha256: str) -> None:
        """The model is stored, or no longer wanted: waiting requests get what is there."""
        event = self._arrivals.pop(sha256, None)
        self._sizes.pop(sha256, None)
        if event is not None:
            event.set()

    def _size(self, sha256: str) -> int | None:
        """The size of a model this node holds or is fetching (a part file left by a
        fetch that ended is not served: it may never be finished)."""
        if self.store.has(sha256):
            return self.store.received(sha256)
        return self._sizes.get(sha256)

    async def read(self, request: ChunkRequest) -> tuple[bytes, int] | None:
        """The requested bytes and the file's size, or None when this node cannot serve
        them in time."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait_s
        # a peer may ask before this node has heard that it is to hold the model
        unknown_until = loop.time() + min(UNKNOWN_GRACE_S, self.wait_s)
        while True:
            size = self._size(request.sha256)
            if size is not None and self.store.holds(request.sha256, offset=request.offset,
                                                     length=request.length):
                data = await asyncio.to_thread(self.store.read_range, request.sha256,
                                               offset=request.offset, length=request.length)
                if data is not None:
                    self.served_bytes += len(data)
                    return data, size
            event = self._arrivals.get(request.sha256)
            if event is None and size is None and loop.time() < unknown_until:
                event, remaining = self._wanted, unknown_until - loop.time()
            else:
                remaining = deadline - loop.time()
            if event is None or remaining <= 0:
                return None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), timeout=remaining)
