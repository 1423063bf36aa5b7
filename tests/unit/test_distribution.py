"""Striped model fetching and chunk serving, with in-memory sources (the real ZeroMQ path
is covered by tests/integration/test_distribution.py): stripes come from their own
sources and are assembled in order, a source that refuses or falls silent is blamed and
its stripe fetched elsewhere, a topology change moves stripes, and a peer serves ranges
from its stored file or from a fetch in progress, waiting for bytes still to come."""

from __future__ import annotations

import asyncio
import functools
import hashlib
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from node_agent.chunk_server import ChunkServer
from node_agent.download import CHUNK_BYTES, Arrival, fetch_model
from node_agent.errors import ModelStoreError
from node_agent.model_store import ModelStore
from node_agent.protocol import (
    Chunk,
    ChunkRequest,
    ChunkUnavailable,
    OverlayPeer,
    Topology,
    WorkerSpec,
)
from node_agent.relay import HUB, Upstream, chunk_sources

PEER_A = Upstream(position=5, endpoint="10.0.0.5:7070", public_key=b"a" * 40)
PEER_B = Upstream(position=6, endpoint="10.0.0.6:7070", public_key=b"b" * 40)


def run(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test on its own event loop."""
    @functools.wraps(test)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))
    return wrapper


def model_bytes(chunks: float) -> bytes:
    size = int(chunks * CHUNK_BYTES)
    return (b"GGUF" + bytes(range(251)) * (size // 251 + 1))[:size]


def spec_of(blob: bytes) -> WorkerSpec:
    return WorkerSpec(model="m", sha256=hashlib.sha256(blob).hexdigest(), size=len(blob),
                      threads=1, n_ctx=64)


@dataclass
class Sources:
    """Fake sources: each answers from `blob` unless it refuses, is silent, or lies."""

    blob: bytes
    plan: tuple[Upstream, ...]
    refuses: set[Upstream] = field(default_factory=set)
    silent: set[Upstream] = field(default_factory=set)
    corrupt: bool = False
    asked: list[tuple[Upstream, int, bool]] = field(default_factory=list)
    blamed: list[Upstream] = field(default_factory=list)
    arrivals: asyncio.Queue[Arrival] = field(default_factory=asyncio.Queue)
    replan: asyncio.Event = field(default_factory=asyncio.Event)
    reverse: bool = True  # answer each window in reverse order: out-of-order arrival
    delay: dict[Upstream, float] = field(default_factory=dict)  # per chunk, a slow source
    busy_until: float = 0.0  # when the slow source is done with what it was asked
    delivered: list[Upstream] = field(default_factory=list)  # whose chunks, in order

    async def send(self, source: Upstream, request: ChunkRequest) -> None:
        self.asked.append((source, request.offset, request.peer))
        if source in self.silent:
            return
        if source in self.refuses:
            self.arrivals.put_nowait(Arrival(source, ChunkUnavailable(
                sha256=request.sha256, offset=request.offset)))
            return
        data = self.blob[request.offset:request.offset + request.length]
        if self.corrupt:
            data = data[:-1] + b"!"
        delay = 0.01 * (8 - len(self.asked) % 8) if self.reverse else 0
        loop = asyncio.get_running_loop()
        if source in self.delay:  # one chunk at a time, each after `delay`
            self.busy_until = max(self.busy_until, loop.time()) + self.delay[source]
            delay = self.busy_until - loop.time()
        loop.call_later(delay, self.deliver, Arrival(source, Chunk(
            sha256=request.sha256, offset=request.offset, total_size=len(self.blob)), data))

    def deliver(self, arrival: Arrival) -> None:
        self.delivered.append(arrival.source)
        self.arrivals.put_nowait(arrival)

    def blame(self, source: Upstream) -> None:
        self.blamed.append(source)
        self.plan = tuple(HUB if s == source else s for s in self.plan)

    async def fetch(self, spec: WorkerSpec, store: ModelStore, *,
                    progress: Callable[[int], None] = lambda _offset: None,
                    resend: Callable[[], bool] = lambda: False) -> None:
        await fetch_model(spec, store=store, sources=lambda: self.plan, send=self.send,
                          arrivals=self.arrivals, replan=self.replan, stall_s=0.3,
                          progress=progress, blame=self.blame, resend=resend)


def fetching(tmp_path: Path, *, chunks: float, plan: tuple[Upstream, ...]
             ) -> tuple[Sources, WorkerSpec, ModelStore]:
    blob = model_bytes(chunks)
    return Sources(blob=blob, plan=plan), spec_of(blob), ModelStore(tmp_path)


@run
async def test_stripes_come_from_their_own_sources_and_are_written_at_their_offsets(
        tmp_path: Path) -> None:
    sources, spec, store = fetching(tmp_path, chunks=20.5, plan=(HUB, PEER_A))
    blob = sources.blob
    await sources.fetch(spec, store)
    assert store.path(spec.sha256).read_bytes() == blob
    for source, offset, peer in sources.asked:
        stripe = (offset // CHUNK_BYTES) % 2
        assert source == (HUB, PEER_A)[stripe]
        assert peer == (source != HUB)
    assert len(sources.asked) == 21  # each chunk asked for once
    assert sources.blamed == []


@run
async def test_a_lagging_stripe_does_not_hold_up_the_others(tmp_path: Path) -> None:
    sources, spec, store = fetching(tmp_path, chunks=16, plan=(HUB, PEER_A))
    sources.delay[PEER_A] = 0.05  # stripe 1 trickles in
    sources.reverse = False
    await sources.fetch(spec, store)
    assert store.path(spec.sha256).read_bytes() == sources.blob
    assert sources.delivered.count(HUB) == sources.delivered.count(PEER_A) == 8
    # all of stripe 0 was in before the third chunk of stripe 1 (a window shared by the
    # stripes, written in order, would have let stripe 0 get only ~4 chunks ahead)
    assert sources.delivered[:10].count(HUB) == 8


@run
async def test_requests_lost_with_a_session_are_sent_again_not_blamed_on_the_hub(
        tmp_path: Path) -> None:
    """The coordinator gets more patience than a peer (it may serve a whole star from
    one uplink); requests lost with the old session are asked again when it changes."""
    sources, spec, store = fetching(tmp_path, chunks=6, plan=(HUB,))
    sources.silent.add(HUB)  # the first requests die with the session

    def session_changed() -> None:
        sources.silent.clear()
        sources.replan.set()

    asyncio.get_running_loop().call_later(0.4, session_changed)  # past a peer's 0.3 s
    await sources.fetch(spec, store, resend=lambda: True)
    assert store.path(spec.sha256).read_bytes() == sources.blob
    assert sources.blamed == []
    first = [offset for _, offset, _ in sources.asked[:6]]
    assert sorted(o for _, o, _ in sources.asked[6:]) == sorted(first)


def test_chunks_held_out_of_order_survive_a_restart(tmp_path: Path) -> None:
    blob = model_bytes(4)
    spec = spec_of(blob)
    store = ModelStore(tmp_path)
    for chunk in (3, 1):
        store.write_chunk(spec.sha256, offset=chunk * CHUNK_BYTES,
                          data=blob[chunk * CHUNK_BYTES:(chunk + 1) * CHUNK_BYTES],
                          total_size=spec.size)
    again = ModelStore(tmp_path)  # the agent restarted
    assert again.received(spec.sha256) == 2 * CHUNK_BYTES
    assert again.holds(spec.sha256, offset=CHUNK_BYTES, length=CHUNK_BYTES)
    assert not again.holds(spec.sha256, offset=0, length=CHUNK_BYTES)
    assert not again.holds(spec.sha256, offset=CHUNK_BYTES, length=2 * CHUNK_BYTES)
    assert again.read_range(spec.sha256, offset=0, length=10) is None
    for chunk in (0, 2):
        again.write_chunk(spec.sha256, offset=chunk * CHUNK_BYTES,
                          data=blob[chunk * CHUNK_BYTES:(chunk + 1) * CHUNK_BYTES],
                          total_size=spec.size)
    assert again.holds(spec.sha256, offset=0, length=spec.size)
    assert again.finish(spec.sha256).read_bytes() == blob
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{spec.sha256}.gguf"]


@pytest.mark.parametrize("failure", ["refuses", "silent"])
@run
async def test_a_source_that_fails_is_blamed_and_its_stripe_fetched_elsewhere(
        tmp_path: Path, failure: str) -> None:
    sources, spec, store = fetching(tmp_path, chunks=9, plan=(HUB, PEER_B))
    blob = sources.blob
    getattr(sources, failure).add(PEER_B)
    await sources.fetch(spec, store)
    assert store.path(spec.sha256).read_bytes() == blob
    assert sources.blamed == [PEER_B]
    assert {s for s, offset, _ in sources.asked if offset // CHUNK_BYTES % 2} == {PEER_B, HUB}


@run
async def test_a_topology_change_moves_stripes_and_a_non_change_moves_none(
        tmp_path: Path) -> None:
    sources, spec, store = fetching(tmp_path, chunks=12, plan=(HUB, PEER_A))
    blob = sources.blob
    written: list[int] = []
    asked_before_move = 0

    def progress(offset: int) -> None:
        nonlocal asked_before_move
        written.append(offset)
        if len(written) == 2:  # the coordinator says something changed, but not ours
            sources.replan.set()
        if len(written) == 4:
            asked_before_move = len(sources.asked)
            sources.plan = (HUB, PEER_B)
            sources.replan.set()

    await sources.fetch(spec, store, progress=progress)
    assert store.path(spec.sha256).read_bytes() == blob
    used = [s for s, offset, _ in sources.asked if offset // CHUNK_BYTES % 2]
    assert PEER_A in used and used[-1] == PEER_B
    offsets = [o for _, o, _ in sources.asked[:asked_before_move]]
    assert len(offsets) == len(set(offsets)), "an unchanged plan restarted the fetch"


@run
async def test_corrupt_bytes_fail_the_sha256_check_and_are_discarded(tmp_path: Path) -> None:
    blob = model_bytes(3)
    spec, store = spec_of(blob), ModelStore(tmp_path)
    with pytest.raises(ModelStoreError, match="corrupt"):
        await Sources(blob=blob, plan=(HUB,), corrupt=True).fetch(spec, store)
    assert not store.has(spec.sha256) and store.received(spec.sha256) == 0


def request(spec: WorkerSpec, chunk: int) -> ChunkRequest:
    return ChunkRequest(sha256=spec.sha256, offset=chunk * CHUNK_BYTES,
                        length=min(CHUNK_BYTES, spec.size - chunk * CHUNK_BYTES), peer=True)


@run
async def test_a_peer_serves_a_stored_model_and_refuses_one_it_does_not_hold(
        tmp_path: Path) -> None:
    blob = model_bytes(2.5)
    spec, store = spec_of(blob), ModelStore(tmp_path)
    store.path(spec.sha256).write_bytes(blob)
    server = ChunkServer(store, wait_s=0.3)
    assert await server.read(request(spec, 2)) == (blob[2 * CHUNK_BYTES:], len(blob))
    other = spec_of(model_bytes(1))
    assert await server.read(request(other, 0)) is None  # not held, not coming
    store.write_chunk(other.sha256, offset=0, data=b"GGUF" * 8, total_size=other.size)
    assert await server.read(ChunkRequest(sha256=other.sha256, offset=0, length=8,
                                          peer=True)) is None  # a part left behind
    assert server.served_bytes == len(blob) - 2 * CHUNK_BYTES


@run
async def test_a_peer_forwards_a_chunk_as_soon_as_it_arrives(tmp_path: Path) -> None:
    """Also when the request comes before this node has started to fetch the model."""
    blob = model_bytes(3)
    spec, store = spec_of(blob), ModelStore(tmp_path)
    server = ChunkServer(store, wait_s=30)
    waiting = asyncio.create_task(server.read(request(spec, 1)))
    await asyncio.sleep(0.05)
    server.want({spec.sha256: spec.size})  # the coordinator's word comes after the request
    held = 0
    for _ in range(2):  # chunk 1 is served only once chunks 0 and 1 are on disk
        await asyncio.sleep(0.05)
        assert not waiting.done()
        held = store.write_chunk(spec.sha256, offset=held,
                                 data=blob[held:held + CHUNK_BYTES], total_size=spec.size)
        server.arrived(spec.sha256)
    assert await asyncio.wait_for(waiting, timeout=10) == (
        blob[CHUNK_BYTES:2 * CHUNK_BYTES], len(blob))
    late = asyncio.create_task(server.read(request(spec, 2)))
    await asyncio.sleep(0.05)
    server.want({})  # the model is no longer wanted: the waiting request is refused
    assert await asyncio.wait_for(late, timeout=10) is None


@run
async def test_a_peer_gives_up_on_bytes_that_do_not_come_in_time(tmp_path: Path) -> None:
    blob = model_bytes(2)
    spec, store = spec_of(blob), ModelStore(tmp_path)
    server = ChunkServer(store, wait_s=0.2)
    server.want({spec.sha256: spec.size})
    assert await asyncio.wait_for(server.read(request(spec, 1)), timeout=10) is None


def peer(position: int, *, up: bool = True, relay: bool = True) -> OverlayPeer:
    return OverlayPeer(position=position, node_id=position + 10, up=up,
                       relay=f"10.0.0.{position}:7070" if relay else None,
                       public_key=chr(ord("a") + position) * 40)


def upstream(position: int) -> Upstream:
    return Upstream(position=position, endpoint=f"10.0.0.{position}:7070",
                    public_key=(chr(ord("a") + position) * 40).encode())


def test_chunk_sources_follow_the_stripe_trees_around_unavailable_nodes() -> None:
    fleet = [peer(p) for p in range(1, 8)]
    seven = Topology(position=1, fanout=2, nodes=tuple(fleet))
    assert chunk_sources(None, down=frozenset()) == (HUB,)
    assert chunk_sources(seven, down=frozenset()) == (HUB, upstream(6))
    assert chunk_sources(seven, down=frozenset({6})) == (HUB, upstream(2))
    no_relay = Topology(position=1, fanout=2,
                        nodes=tuple(peer(p, relay=p != 6) for p in range(1, 8)))
    assert chunk_sources(no_relay, down=frozenset()) == (HUB, upstream(2))
    said_down = Topology(position=7, fanout=2,
                         nodes=tuple(peer(p, up=p != 4) for p in range(1, 8)))
    assert chunk_sources(said_down, down=frozenset()) == (upstream(1), upstream(5))
    star = Topology(position=3, fanout=8, nodes=tuple(fleet))
    assert chunk_sources(star, down=frozenset()) == (HUB,)
