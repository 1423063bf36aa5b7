"""Fetching a model into the node's store: chunked, windowed, resumable, verified.

`fetch_model` asks for 1 MiB chunks with up to 8 in flight, writes each at its offset,
and when chunks stop coming (a broken link, a route change) it drops what is in flight
and resumes from the bytes already on disk. The finished file is checked against its
sha256 before it is moved into place (`ModelStore.finish`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from node_agent.errors import ModelStoreError
from node_agent.model_store import ModelStore
from node_agent.protocol import Chunk, ChunkRequest, WorkerSpec

log = logging.getLogger("slmfleet.agent")

CHUNK_BYTES = 1 << 20
CHUNK_WINDOW = 8


async def fetch_model(spec: WorkerSpec, *, store: ModelStore,
                      request: Callable[[ChunkRequest], Awaitable[object]],
                      chunks: asyncio.Queue[tuple[Chunk, bytes]], stall_s: float,
                      progress: Callable[[int], None]) -> None:
    """Download `spec`'s file over `request`/`chunks` until it is whole and verified.

    Raises ModelStoreError when the file cannot be stored or fails its sha256.
    """
    offset = store.received(spec.sha256)
    while offset < spec.size:
        while not chunks.empty():  # answers to requests of an earlier attempt
            chunks.get_nowait()
        requested, inflight = offset, 0
        try:
            while offset < spec.size:
                while inflight < CHUNK_WINDOW and requested < spec.size:
                    length = min(CHUNK_BYTES, spec.size - requested)
                    await request(ChunkRequest(sha256=spec.sha256, offset=requested,
                                               length=length))
                    requested += length
                    inflight += 1
                chunk, data = await asyncio.wait_for(chunks.get(), timeout=stall_s)
                inflight -= 1
                offset = store.write_chunk(spec.sha256, offset=chunk.offset, data=data,
                                           total_size=spec.size)
                progress(offset)
        except (TimeoutError, ModelStoreError) as exc:
            log.warning("download of %s stalled (%s); resuming", spec.model, exc)
            offset = store.received(spec.sha256)
    store.finish(spec.sha256)
