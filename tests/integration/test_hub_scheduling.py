"""The hub's scheduling with real ZeroMQ peers: a backup copy near a job's end (first
result wins, the other is cancelled), leases kept across a re-registration, and liveness
judged right while the hub is busy or after its loop stalled."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import time
from collections.abc import Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import pytest
import zmq
import zmq.asyncio

from coordinator import store as st
from coordinator.hub import Hub
from node_agent import curve
from node_agent.hardware import hardware_facts
from node_agent.protocol import (
    PROTOCOL_VERSION,
    Heartbeat,
    Register,
    WorkRequest,
    WorkResult,
    _Msg,
    encode,
)
from tests.support.peers import registering_dealer
from tests.support.postgres import fresh_schema

pytestmark = pytest.mark.integration

PARAMS = {"stop": [], "max_tokens": 4, "temperature": 0.0, "seed": 1}


class Peer:
    """A fake agent: a CURVE DEALER that registers and keeps what the hub sends."""

    def __init__(self, context: zmq.asyncio.Context, hub: Hub, name: str) -> None:
        self.name = name
        self.socket = context.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        curve.KeyPair(*zmq.curve_keypair()).apply_client(self.socket,
                                                         server_key=hub.public_key)
        self.socket.connect(f"tcp://127.0.0.1:{hub.port}")
        self.inbox: list[dict[str, Any]] = []

    async def send(self, message: _Msg) -> None:
        await self.socket.send_multipart(encode(message))

    async def register(self, *, leases: tuple[str, ...] = ()) -> None:
        await self.send(Register(protocol=PROTOCOL_VERSION, token="t", name=self.name,
                                 facts=hardware_facts(), leases=leases))
        await self.wait_for("welcome")

    async def wait_for(self, kind: str, *, timeout_s: float = 20) -> dict[str, Any]:
        async def look() -> dict[str, Any]:
            while True:
                message = json.loads((await self.socket.recv_multipart())[0])
                self.inbox.append(message)
                if message["type"] == kind:
                    return message
        return await asyncio.wait_for(look(), timeout_s)

    async def ask(self, *, every_s: float = 0.2, timeout_s: float = 20) -> dict[str, Any]:
        """Ask for work until a lease comes."""
        async def loop() -> dict[str, Any]:
            while True:
                await self.send(WorkRequest(model="m", slots=1))
                reply = await self.wait_for_any(("work_lease", "no_work"))
                if reply["type"] == "work_lease":
                    return reply
                await asyncio.sleep(every_s)
        return await asyncio.wait_for(loop(), timeout_s)

    async def wait_for_any(self, kinds: tuple[str, ...]) -> dict[str, Any]:
        while True:
            message = json.loads((await self.socket.recv_multipart())[0])
            self.inbox.append(message)
            if message["type"] in kinds:
                return message


def result(lease: dict[str, Any]) -> WorkResult:
    return WorkResult(lease_id=lease["lease_id"], item_id=lease["item_id"], output="billing",
                      measurement=None, error=None)


def one_item_job(store: st.Store, tmp_path: Path, *, items: int = 1) -> int:
    st.add_model(store, name="m", sha256="0" * 64, size=1, path=str(tmp_path / "m"),
                 threads=1, n_ctx=128)
    return st.create_job(store, name="j", spec={}, items=[st.NewWorkItem(
        model="m", task="classification", dataset="d", item_key=f"k{i}", repeat=0,
        prompt="p", reference={"label": "billing", "labels": ["billing"]}, params=PARAMS)
        for i in range(items)]).id


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """On PostgreSQL the hub answers work requests concurrently, in threads."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 's.db'}"
    else:
        with fresh_schema() as url:
            yield url


async def _with_hub(tmp_path: Path, scenario: Any, *, url: str | None = None,
                    backups: bool = True, liveness: int = 3) -> Any:
    context = zmq.asyncio.Context()
    store = st.Store(url or f"sqlite:///{tmp_path / 's.db'}")
    hub = Hub(store=store, token="t", keys=curve.load_or_create(tmp_path, "hub"),
              bind="tcp://127.0.0.1:0", heartbeat_interval_s=0.5, liveness=liveness,
              backups=backups, context=context)
    running = asyncio.create_task(hub.run())
    try:
        return await scenario(context, hub, store)
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        context.destroy(linger=0)
        store.close()


def test_a_straggling_nodes_last_item_is_copied_and_the_first_result_wins(
        tmp_path: Path, store_url: str) -> None:
    async def scenario(context: zmq.asyncio.Context, hub: Hub, store: st.Store
                       ) -> tuple[Any, ...]:
        job = one_item_job(store, tmp_path, items=2)
        slow, fast = Peer(context, hub, "slow"), Peer(context, hub, "fast")
        await slow.register()
        await fast.register()
        first = await slow.ask()
        # slow stays up but sits on its lease; fast does the other item at once (so the
        # hub knows its pace), then asks until a copy of slow's item comes
        beating = [asyncio.create_task(_beat(peer)) for peer in (slow, fast)]
        try:
            await fast.send(result(await fast.ask()))
            copy = await fast.ask()
            await fast.send(result(copy))
            cancelled = await slow.wait_for("cancel_lease")
            await slow.send(result(first))  # too late: discarded, counted
            while st.get_job(store, job_id=job).state == "running":
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.5)  # the late result is handled meanwhile
        finally:
            for beat in beating:
                beat.cancel()
        item = st.get_item(store, item_id=first["item_id"])
        assert item is not None
        return (first["item_id"] == copy["item_id"], first["lease_id"] != copy["lease_id"],
                cancelled["lease_id"] == first["lease_id"], item.status, item.node_id,
                (hub.backups_started, hub.backups_cancelled), store.discarded_results)

    same_item, new_lease, cancels_first, status, node, backups, discarded = asyncio.run(
        _with_hub(tmp_path, scenario, url=store_url))
    assert same_item and new_lease and cancels_first
    assert (status, node, backups, discarded) == ("done", 2, (1, 1), 1)


@pytest.mark.parametrize("backups", [True, False])
def test_backups_off_leave_a_straggler_alone(tmp_path: Path, backups: bool) -> None:
    """The straggler of the test above, asked about ten times by an idle fast node: a
    copy comes with backups on (so the scenario would copy), never with them off."""
    asks = 10

    async def scenario(context: zmq.asyncio.Context, hub: Hub, store: st.Store
                       ) -> tuple[int, int]:
        one_item_job(store, tmp_path, items=2)
        slow, fast = Peer(context, hub, "slow"), Peer(context, hub, "fast")
        await slow.register()
        await fast.register()
        await slow.ask()
        beating = [asyncio.create_task(_beat(peer)) for peer in (slow, fast)]
        try:
            await fast.send(result(await fast.ask()))
            copies = 0
            for _ in range(asks):
                await fast.send(WorkRequest(model="m", slots=1))
                reply = await fast.wait_for_any(("work_lease", "no_work"))
                if reply["type"] == "work_lease":
                    copies += 1
                    break
                await asyncio.sleep(0.2)
        finally:
            for beat in beating:
                beat.cancel()
        return copies, hub.backups_started

    copies, started = asyncio.run(_with_hub(tmp_path, scenario, backups=backups))
    assert (copies, started) == ((1, 1) if backups else (0, 0))


def test_a_reregistering_node_keeps_the_leases_it_declares(tmp_path: Path,
                                                           store_url: str) -> None:
    """As after a coordinator restart: the node registers again naming the lease it
    still works on; that lease stays its own and its result is recorded."""
    async def scenario(context: zmq.asyncio.Context, hub: Hub, store: st.Store
                       ) -> tuple[str, int | None, str]:
        job = one_item_job(store, tmp_path)
        node = Peer(context, hub, "n1")
        await node.register()
        lease = await node.ask()
        node.socket.disconnect(f"tcp://127.0.0.1:{hub.port}")
        node.socket.connect(f"tcp://127.0.0.1:{hub.port}")
        await node.register(leases=(lease["lease_id"],))
        (kept,) = st.job_items(store, job_id=job)
        await node.send(result(lease))
        while st.get_job(store, job_id=job).state == "running":
            await asyncio.sleep(0.05)
        return kept.status, kept.lease_node, st.get_job(store, job_id=job).state

    assert asyncio.run(_with_hub(tmp_path, scenario, url=store_url)) == (
        "leased", 1, "finished")


async def _beat(peer: Peer) -> None:
    seq = 0
    while True:
        await peer.send(Heartbeat(seq=seq))
        seq += 1
        await asyncio.sleep(0.2)


def _flood(port: int, server_key: bytes, seconds: float) -> None:
    """Register, then send heartbeats back to back for `seconds` (in its own process)."""
    context = zmq.Context()
    sock = registering_dealer(context, port=port, server_key=server_key, name="chatty",
                              unbounded=True)
    beat = encode(Heartbeat(seq=1))
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for _ in range(100):
            sock.send_multipart(beat)
    context.destroy(linger=0)


def test_a_busy_hub_still_drops_a_silent_node(tmp_path: Path) -> None:
    """Another process keeps the hub's socket full while an agent falls silent: the hub
    still runs its liveness checks (a receive with a message waiting never suspends, so
    the hub must yield after each message)."""
    async def scenario(context: zmq.asyncio.Context, hub: Hub, store: st.Store) -> bool:
        quiet = Peer(context, hub, "quiet")
        await quiet.register()
        flood = multiprocessing.get_context("spawn").Process(
            target=_flood, args=(hub.port, hub.public_key, 15.0))
        flood.start()
        try:
            while flood.is_alive():  # the quiet node is due 1.5 s after it registered
                if {p.node_id for p in hub.peers.values()} == {2}:  # only chatty is left
                    return flood.is_alive()
                await asyncio.sleep(0.05)
            return False
        finally:
            flood.kill()
            await asyncio.to_thread(flood.join)

    assert asyncio.run(_with_hub(tmp_path, scenario))


def _steady(port: int, server_key: bytes, seconds: float, report: Connection) -> None:
    """Register as "steady" and heartbeat every 0.1 s for `seconds`, in its own process
    (a blocked hub loop does not block it); report what the hub sent, in order, as
    (CLOCK_MONOTONIC time, type, ids of nodes a topology shows down)."""
    context = zmq.Context()
    sock = registering_dealer(context, port=port, server_key=server_key, name="steady")
    seen: list[tuple[float, str, list[int]]] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        sock.send_multipart(encode(Heartbeat(seq=len(seen))))
        while sock.poll(100):
            message = json.loads(sock.recv_multipart()[0])
            down = [n["node_id"] for n in message.get("nodes", []) if not n.get("up", True)]
            seen.append((time.monotonic(), message["type"], down))
    report.send(seen)
    context.destroy(linger=0)


def test_after_a_stalled_loop_the_hub_reads_before_it_judges(tmp_path: Path) -> None:
    """The hub's loop is blocked for longer than liveness allows (as by a slow disk)
    right after a node registered that then stays silent, while another node keeps
    talking from its own process. Once the loop runs again the hub reads what arrived
    meanwhile, so the talking node stays, and drops the silent one at once: no more than
    one of its per-interval heartbeats goes out first (forgiving the stall to every node
    would keep the silent one for 5 more intervals)."""
    liveness, block_s = 5, 3.5  # a node is dropped after 5 intervals (2.5 s); 7 of them

    async def scenario(context: zmq.asyncio.Context, hub: Hub, store: st.Store
                       ) -> tuple[float, list[tuple[float, str, list[int]]], set[int], int]:
        receive, send = multiprocessing.get_context("spawn").Pipe(duplex=False)
        steady = multiprocessing.get_context("spawn").Process(
            target=_steady, args=(hub.port, hub.public_key, block_s + 5.0, send))
        steady.start()
        try:
            while not hub.peers:
                await asyncio.sleep(0.05)
            silent = Peer(context, hub, "silent")
            await silent.register()
            time.sleep(block_s)  # blocks the hub's loop, which this test shares
            unblocked = time.monotonic()
            seen = await asyncio.to_thread(receive.recv)
        finally:
            steady.kill()
            await asyncio.to_thread(steady.join)
        silent_id = next(n.id for n in st.list_nodes(store) if n.name == "silent")
        return unblocked, seen, {p.node_id for p in hub.peers.values()}, silent_id

    unblocked, seen, live, silent_id = asyncio.run(_with_hub(tmp_path, scenario,
                                                             liveness=liveness))
    steady_id = next(iter(live - {silent_id}), None)
    assert live == {steady_id} and steady_id is not None, "the talking node was dropped"
    shown_down = [t for t, kind, down in seen if kind == "topology" and silent_id in down]
    assert shown_down, f"the silent node was never shown down: {seen}"
    beats = [t for t, kind, _ in seen if kind == "heartbeat" and unblocked < t < shown_down[0]]
    assert len(beats) <= 1, f"{len(beats)} heartbeat rounds before the silent node was dropped"
    assert not any(steady_id in down for _, _, down in seen), "the talking node was shown down"
