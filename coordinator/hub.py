"""The coordinator's ZeroMQ hub: one ROUTER socket that every agent session talks to.

It admits agents that present the join token, answers heartbeats, streams model chunks,
leases work items and records results. A malformed message is answered with an error
and logged; it never stops the hub. Peers that fall silent for `liveness × interval`
are dropped and must register again.

The socket is a CurveZMQ server: every link is encrypted, a client without the hub's
public key cannot even connect, and the ZAP handler refuses revoked keys during the
handshake. Each message carries its sender's public key (ZeroMQ's `User-Id`), which
pins a node to the key it registered with.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import zmq
import zmq.asyncio
from zmq.auth.asyncio import AsyncioAuthenticator

from coordinator import scheduler as sched
from coordinator import store as st
from coordinator.db import WorkItemRow, utcnow
from coordinator.errors import SlmfleetError
from coordinator.evaluation.tasks import get_task
from coordinator.overlay_view import positions
from node_agent import relay
from node_agent.curve import KeyPair
from node_agent.errors import ProtocolError
from node_agent.liveness import peer_alive
from node_agent.protocol import (
    PROTOCOL_VERSION,
    Bye,
    CancelLease,
    Chunk,
    ChunkRequest,
    DesiredWorkers,
    ErrorReply,
    Heartbeat,
    LeasesHeld,
    Metrics,
    NoWork,
    OverlayPeer,
    Register,
    Rejected,
    Topology,
    Welcome,
    WorkerSpec,
    WorkLease,
    WorkRequest,
    WorkResult,
    _Msg,
    decode,
    encode,
)

log = logging.getLogger("slmfleet.hub")
T = TypeVar("T")


@dataclass
class Peer:
    node_id: int
    last_seen: float
    key: bytes = b""
    relay: str | None = None  # where the node relays for its overlay children
    ram_mb: float | None = None  # from its hardware facts
    free_mb: float | None = None  # from its last status report


QUEUE_VIEW_S = 0.25  # how old the scheduler's view of the queue may be
ITEM_TIME_WEIGHT = 0.3  # of the newest item in a node's seconds-per-item average
CHECKS_PER_INTERVAL = 4  # liveness checks per heartbeat interval
MAX_UNRECORDED = 256  # results waiting to be scored and stored before leasing pauses
RECORD_BATCH = 128  # results scored and stored together
BACKLOG_RETRY_S = 0.1


class _KeyGate:
    """ZAP credentials provider: any key may connect except revoked ones (admission is by
    join token at registration, then by the pinned key)."""

    def __init__(self, revoked: set[bytes]) -> None:
        self.revoked = revoked
        self.refused = 0

    def callback(self, _domain: str, key: bytes) -> bool:
        if key in self.revoked:
            self.refused += 1
            return False
        return True


def score_item(item: WorkItemRow, output: str) -> tuple[str | None, dict[str, Any]]:
    return get_task(item.task).score_item(output, item.reference)


def score_batch(items: dict[int, WorkItemRow], batch: list[tuple[int, WorkResult]]
                ) -> list[st.ResultIn]:
    """Score each result of a live lease, ready to be stored (stale ones are discarded and
    counted by the store). A scoring bug fails its item, not the hub."""
    ready = []
    for node_id, result in batch:
        item = items.get(result.item_id)
        scored, unscorable = None, None
        if item is not None and result.error is None and result.lease_id in (
                item.lease_id, item.backup_lease_id):
            try:
                scored = score_item(item, result.output)
            except Exception as exc:  # noqa: BLE001 - any scoring bug
                log.exception("scoring item %d (%s) failed", item.id, item.task)
                unscorable = f"scoring failed: {exc!r}"
        ready.append(st.ResultIn(
            item_id=result.item_id, lease_id=result.lease_id, node_id=node_id,
            output=result.output, error=result.error, scored=scored, unscorable=unscorable,
            measurement=result.measurement.model_dump() if result.measurement else None))
    return ready


class Hub:
    """Admits agents and serves their requests over one ROUTER socket."""

    def __init__(self, *, store: st.Store, token: str, bind: str, keys: KeyPair,
                 heartbeat_interval_s: float = 1.0, liveness: int = 3,
                 lease_s: float = 300.0, fanout: int = 2, backups: bool = True,
                 context: zmq.asyncio.Context | None = None) -> None:
        self.store = store
        self._token = token
        self.bind = bind
        self.interval_s = heartbeat_interval_s
        self.liveness = liveness
        self.lease_s = lease_s
        self.fanout = fanout  # of the overlay shown by GET /topology
        self._context = context or zmq.asyncio.Context.instance()
        self.public_key = keys.public
        self._gate = _KeyGate(st.revoked_keys(store))
        self._auth = AsyncioAuthenticator(self._context)
        self._auth.start()
        self._auth.configure_curve_callback(domain="*", credentials_provider=self._gate)
        self._socket = self._context.socket(zmq.ROUTER)
        keys.apply_server(self._socket)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.setsockopt(zmq.ROUTER_MANDATORY, 0)
        self.port = self._socket.bind_to_random_port(bind.rsplit(":", 1)[0]) \
            if bind.endswith(":0") else self._bind(bind)
        self.peers: dict[bytes, Peer] = {}  # by the origin's routing id
        self._paths: dict[bytes, list[bytes]] = {}  # how to reach an origin: its last path
        self._results: list[tuple[int, WorkResult]] = []  # (node id, result) to record
        self._recorder: asyncio.Task[None] | None = None
        self._recording = 0  # results in the batch being recorded
        self._concurrent = store.engine.dialect.name == "postgresql"
        self._assigning: set[asyncio.Task[None]] = set()
        self.origin_bytes_sent = 0  # model bytes this coordinator served (the origin)
        self.draining = st.draining_nodes(store)  # node ids that get no new leases
        self.rejected_messages = 0
        self.policy = sched.Policy(silent_s=2 * heartbeat_interval_s, backups=backups)
        self._queue: list[sched.JobView] = []
        self._queue_at = -math.inf
        self._placed: dict[int, tuple[str, ...]] = {}  # node -> models it hosts
        self._homeless: set[str] = set()  # models with work that fit on no live node
        self._leased_at: dict[str, tuple[float, int, str]] = {}  # lease: when, node, model
        self.item_s: dict[int, dict[str, float]] = {}  # node -> model -> seconds per item
        self.backups_started = 0
        self.leases_requeued = 0  # items put back in the queue, for /metrics
        self.backups_cancelled = 0
        self._started = time.monotonic()
        # leases from before a restart: kept this long for their nodes to come back
        self.adopt_s = heartbeat_interval_s * liveness * 4

    def _bind(self, bind: str) -> int:
        self._socket.bind(bind)
        return int(bind.rsplit(":", 1)[1])

    async def run(self) -> None:
        ticker = asyncio.create_task(self._tick())
        try:
            while True:
                frames = await self._socket.recv_multipart(copy=False)
                key = str(frames[-1].get("User-Id") or "").encode()
                await self._arrived(frames[0].bytes, key, [f.bytes for f in frames[1:]])
                # a receive with a message waiting never suspends: yield, or the results
                # being recorded and the liveness checks would wait as long as agents talk
                await asyncio.sleep(0)
        finally:
            ticker.cancel()
            self._socket.close(linger=0)
            self._auth.stop()

    @property
    def refused_handshakes(self) -> int:
        return self._gate.refused

    async def revoke(self, *, node_id: int, key: str | None) -> None:
        """Refuse `key` from now on and end the node's session, telling it why."""
        if key:
            self._gate.revoked.add(key.encode())
        for peer, session in list(self.peers.items()):
            if session.node_id == node_id:
                del self.peers[peer]
                await self._send(peer, Rejected(reason="this node was revoked by the "
                                                "operator; it may join again only with a "
                                                "new key", reregister=False))

    async def _arrived(self, direct: bytes, key: bytes, frames: list[bytes]) -> None:
        """Unwrap relayed frames (only live nodes may relay) and handle the message."""
        try:
            path, origin_key, frames = relay.unwrap(direct, key, frames)
        except ProtocolError as exc:
            self.rejected_messages += 1
            log.warning("rejected relayed frames from peer %s: %s", direct.hex()[:8], exc)
            return
        if len(path) > 1 and not any(s.key == key for s in self.peers.values()):
            self.rejected_messages += 1
            log.warning("dropped frames relayed by a peer that is not a live node")
            return
        moved = path[-1] in self._paths and self._paths[path[-1]] != path
        self._paths[path[-1]] = path
        await self._handle(path[-1], frames, key=origin_key)
        if moved and path[-1] in self.peers:
            await self._resync(path[-1])

    async def _send(self, peer: bytes, message: _Msg, data: bytes | None = None) -> None:
        frames = relay.wrap_down(self._paths.get(peer, [peer]), encode(message, data))
        with contextlib.suppress(zmq.ZMQError):
            await self._socket.send_multipart(frames)

    async def _handle(self, peer: bytes, frames: list[bytes], *, key: bytes) -> None:
        try:
            message, _ = decode(frames)
        except ProtocolError as exc:
            self.rejected_messages += 1
            log.warning("rejected a message from peer %s: %s", peer.hex()[:8], exc)
            await self._send(peer, ErrorReply(code="bad_message", message=str(exc)))
            return
        if key in self._gate.revoked:  # revoked while connected: the handshake came before
            self.rejected_messages += 1
            return
        if isinstance(message, Register):
            await self._register(peer, message, key=key)
            return
        session = self.peers.get(peer)
        if session is None or session.key != key:
            await self._send(peer, Rejected(reason="not registered (or expired); register "
                                            "again", reregister=True))
            return
        session.last_seen = time.monotonic()
        try:
            await self._serve(peer, session, message)
        except SlmfleetError as exc:
            await self._send(peer, ErrorReply(code=type(exc).__name__, message=str(exc)))

    async def _register(self, peer: bytes, message: Register, *, key: bytes) -> None:
        if not hmac.compare_digest(message.token.encode(), self._token.encode()):
            self.rejected_messages += 1
            log.warning("refused node %r: wrong join token", message.name)
            await self._send(peer, Rejected(reason="invalid join token; start the agent with "
                                            "the coordinator's --token"))
            return
        if message.protocol != PROTOCOL_VERSION:
            await self._send(peer, Rejected(reason=f"protocol {message.protocol} is not "
                                            f"supported; upgrade to {PROTOCOL_VERSION}"))
            return
        try:
            node = st.upsert_node(self.store, name=message.name,
                                  facts=message.facts.model_dump(), runtime=message.runtime,
                                  public_key=key.decode() or None)
        except SlmfleetError as exc:
            self.rejected_messages += 1
            log.warning("refused node %r: %s", message.name, exc)
            await self._send(peer, Rejected(reason=str(exc)))
            return
        for other, session in list(self.peers.items()):
            if session.node_id == node.id:
                del self.peers[other]
        # leases the node does not say it holds were sent to an old session (or by a
        # coordinator before a restart) and lost: hand them out again
        requeued = self._requeued(st.requeue_node_leases(self.store, node_id=node.id,
                                                          keep=message.leases))
        if requeued:
            log.warning("node %d registered again; requeued %d leased items it does not "
                        "hold", node.id, requeued)
        self.peers[peer] = Peer(node_id=node.id, last_seen=time.monotonic(), key=key,
                                relay=message.relay, ram_mb=float(message.facts.ram_mb))
        log.info("node %d (%s) registered", node.id, message.name)
        self._placed = self.placement()
        await self._send(peer, Welcome(node_id=node.id, heartbeat_interval_s=self.interval_s,
                                       liveness=self.liveness, parent=0))
        await self._send(peer, self.desired_workers(self.peers[peer]))
        await self.push_topology()

    def routes(self) -> dict[int, list[int]]:
        """For each live node, the nodes its traffic last came through: the hub's neighbour
        first, the node itself last (a single entry: it is linked to the hub directly)."""
        node_of = {origin: s.node_id for origin, s in self.peers.items()}
        return {s.node_id: [node_of.get(hop, 0) for hop in self._paths.get(origin, [origin])]
                for origin, s in self.peers.items()}

    async def push_topology(self, *, only: bytes | None = None) -> None:
        """Tell every live node (or `only` that one) the overlay: its position, and every
        node's relay and key. Nodes are placed by `overlay_view.positions` (join order;
        node ids never change, so neither do positions, but for revoked nodes)."""
        live = {s.node_id: s for s in self.peers.values()}
        keys = {n.id: n.public_key for n in st.list_nodes(self.store)}
        position = positions((node_id, key is not None) for node_id, key in keys.items())
        nodes = tuple(OverlayPeer(position=p, node_id=n, public_key=keys[n] or "",
                                  up=n in live, relay=live[n].relay if n in live else None)
                      for n, p in position.items())
        for peer, session in list(self.peers.items()):
            where = position.get(session.node_id)
            if where is not None and only in (None, peer):
                await self._send(peer, Topology(position=where, fanout=self.fanout,
                                                nodes=nodes))

    async def _resync(self, peer: bytes) -> None:
        """Send a node that moved to another route the state pushed to it lately: what
        went out on the old route may be lost (e.g. while its new relay had not yet heard
        of it and dropped what it sent)."""
        await self._send(peer, self.desired_workers(self.peers[peer]))
        await self.push_topology(only=peer)

    def placement(self) -> dict[int, tuple[str, ...]]:
        """Which models each live node hosts (`scheduler.place`): models with the most
        pending items first, each on every node whose memory still holds it."""
        pending: dict[str, int] = {}
        for job in self._queue_now():
            for model, count in job.pending.items():
                pending[model] = pending.get(model, 0) + count
        models = sorted(st.models_wanted(self.store),
                        key=lambda m: (-pending.get(m.name, 0), m.name))
        needs = [sched.ModelNeed(m.name, sched.model_memory_mb(
            size=m.size, n_ctx=m.n_ctx, memory_mb=m.memory_mb)) for m in models]
        placed = sched.place(needs, [sched.NodeRoom(s.node_id, s.ram_mb)
                                     for s in self.peers.values()])
        hosted = {model for models in placed.values() for model in models}
        for need in needs:
            homeless = placed and pending.get(need.name) and need.name not in hosted
            if homeless and need.name not in self._homeless:
                log.warning("model %s (needs %.0f MB) fits on no live node: its items "
                            "wait; set a lower memory_mb or add a node with more RAM",
                            need.name, need.memory_mb)
            (self._homeless.add if homeless else self._homeless.discard)(need.name)
        return placed

    def desired_workers(self, session: Peer) -> DesiredWorkers:
        hosted = set(self._placed.get(session.node_id, ()))
        return DesiredWorkers(workers=tuple(
            WorkerSpec(model=m.name, sha256=m.sha256, size=m.size, threads=m.threads,
                       n_ctx=m.n_ctx, cpus=m.cpus, memory_mb=m.memory_mb)
            for m in st.models_wanted(self.store) if m.name in hosted))

    async def push_desired(self) -> None:
        """Tell every connected agent the workers it should run now."""
        self._placed = self.placement()
        for peer, session in list(self.peers.items()):
            await self._send(peer, self.desired_workers(session))

    async def _serve(self, peer: bytes, session: Peer, message: _Msg) -> None:
        match message:
            case Heartbeat():
                pass
            case Metrics():
                session.free_mb = float(message.metrics.mem_available_mb)
                st.record_metrics(self.store, node_id=session.node_id,
                                  metrics=message.metrics.model_dump(),
                                  workers=[w.model_dump() for w in message.workers],
                                  errors=list(message.errors))
            case ChunkRequest():
                await self._send_chunk(peer, message)
            case WorkRequest() if session.node_id in self.draining:
                await self._send(peer, NoWork(model=message.model, retry_after_s=5.0))
            case WorkRequest() if self._concurrent:  # overlap the store's round trips
                assigning = asyncio.create_task(self._assign(peer, session, message.model))
                self._assigning.add(assigning)
                assigning.add_done_callback(self._assigned)
            case WorkRequest():
                await self._assign(peer, session, message.model)
            case WorkResult():  # scored and stored in batches, off the event loop
                self._timed(message.lease_id, failed=message.error is not None)
                self._results.append((session.node_id, message))
                if self._recorder is None or self._recorder.done():
                    self._recorder = asyncio.create_task(self._record_results())
                    self._recorder.add_done_callback(self._recorded)
            case LeasesHeld():  # it moved routes: leases sent meanwhile may be lost
                requeued = self._requeued(st.requeue_node_leases(
                    self.store, node_id=session.node_id, keep=message.lease_ids))
                if requeued:
                    log.warning("node %d changed routes; requeued %d leases it never got",
                                session.node_id, requeued)
            case Bye():  # it stopped its workers: what they held is lost
                st.mark_left(self.store, node_id=session.node_id)
                self._requeued(st.requeue_node_leases(self.store, node_id=session.node_id))
                del self.peers[peer]
                await self.push_topology()
            case _:
                await self._send(peer, ErrorReply(
                    code="unexpected", message=f"{type(message).__name__} is not accepted "
                    "by the coordinator"))

    def _recorded(self, task: asyncio.Task[None]) -> None:
        self._recording = 0
        if not task.cancelled() and task.exception() is not None:
            log.error("recording results failed", exc_info=task.exception())

    def _assigned(self, task: asyncio.Task[None]) -> None:
        self._assigning.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("answering a work request failed", exc_info=task.exception())

    async def _db(self, call: Callable[..., T], **kwargs: Any) -> T:
        """A store call of the work path: in a thread on PostgreSQL (several overlap, each
        waiting on its round trips), inline on SQLite (one writer at a time: a thread
        writing batch after batch starved the hub's own writes for seconds)."""
        if self._concurrent:
            return await asyncio.to_thread(call, self.store, **kwargs)
        return call(self.store, **kwargs)

    @property
    def results_waiting(self) -> int:
        """Results received and not yet stored."""
        return len(self._results) + self._recording

    async def _record_results(self) -> None:
        """Score the results that came in, a batch at a time, in a thread (the embedding
        metrics take a while), then store the batch in one transaction."""
        while self._results:
            batch, self._results = self._results[:RECORD_BATCH], self._results[RECORD_BATCH:]
            self._recording = len(batch)
            items = await self._db(st.items_by_id, ids={r.item_id for _n, r in batch})
            ready = await asyncio.to_thread(score_batch, items, batch)
            outcomes = await self._db(st.record_results, results=ready)
            self._recording = 0
            for (_node, result), outcome in zip(batch, outcomes, strict=True):
                if not outcome.accepted:
                    log.info("discarded a stale result for item %d", result.item_id)
                await self._cancel(outcome.cancel)

    async def _cancel(self, lease: tuple[int, str] | None) -> None:
        """Tell the node running the losing copy of a backed-up item to stop."""
        if lease is None:
            return
        node_id, lease_id = lease
        self._leased_at.pop(lease_id, None)
        self.backups_cancelled += 1
        for peer, session in list(self.peers.items()):
            if session.node_id == node_id:
                await self._send(peer, CancelLease(lease_id=lease_id))

    def _queue_now(self, *, fresh: bool = False) -> list[sched.JobView]:
        """The scheduler's view of the queue, read again when older than QUEUE_VIEW_S."""
        now = time.monotonic()
        if fresh or now - self._queue_at > QUEUE_VIEW_S:
            self._queue, self._queue_at = st.queue_view(self.store), now
        return self._queue

    def _node_views(self, now: float) -> dict[int, sched.NodeView]:
        return {s.node_id: sched.NodeView(
            id=s.node_id, models=frozenset(self._placed.get(s.node_id, ())),
            silent_s=now - s.last_seen, free_mb=s.free_mb,
            item_s=self.item_s.get(s.node_id, {})) for s in self.peers.values()}

    async def _assign(self, peer: bytes, session: Peer, model: str) -> None:
        """Answer a work request as the scheduler decides (`scheduler.decide`); while
        results wait to be recorded, no new work goes out (they may end the items that a
        backup copy would start, and each lease taken now adds to the wait)."""
        if self.results_waiting >= MAX_UNRECORDED:
            await self._send(peer, NoWork(model=model, retry_after_s=BACKLOG_RETRY_S))
            return
        jobs = self._queue_now()
        leases: list[sched.LeaseView] = []
        if not any(j.pending.get(model) for j in jobs):  # the tail: backups are possible
            leases = await self._db(st.open_leases, model=model, lease_s=self.lease_s)
        decision = sched.decide(sched.Ask(session.node_id, model), jobs=jobs,
                                nodes=self._node_views(time.monotonic()), leases=leases,
                                now=time.time(), policy=self.policy)
        item: WorkItemRow | None = None
        lease_id = ""
        match decision:
            case sched.Take(job_ids):
                item = await self._db(st.lease_next, model=model,
                                         node_id=session.node_id, lease_s=self.lease_s,
                                         job_ids=job_ids)
                lease_id = (item.lease_id or "") if item else ""
                if item is None:
                    self._queue_now(fresh=True)
            case sched.Backup(item_id):
                item = await self._db(st.lease_backup, item_id=item_id,
                                         node_id=session.node_id, lease_s=self.lease_s)
                lease_id = (item.backup_lease_id or "") if item else ""
                if item is not None:
                    self.backups_started += 1
                    log.info("item %d runs late on node %s; a backup copy starts on node "
                             "%d", item_id, item.lease_node, session.node_id)
        if item is None:
            retry = decision.retry_after_s if isinstance(decision, sched.Wait) else 0.5
            await self._send(peer, NoWork(model=model, retry_after_s=retry))
            return
        self._leased_at[lease_id] = (time.monotonic(), session.node_id, model)
        await self._send(peer, WorkLease(
            lease_id=lease_id, item_id=item.id, model=item.model, prompt=item.prompt,
            stop=tuple(item.params["stop"]), max_tokens=item.params["max_tokens"],
            temperature=item.params["temperature"], seed=item.params["seed"],
            lease_s=self.lease_s, kind=item.params.get("kind", "complete")))

    def _timed(self, lease_id: str, *, failed: bool) -> None:
        """Fold a lease's time from lease to result into its node's seconds per item."""
        leased = self._leased_at.pop(lease_id, None)
        if leased is None or failed:
            return
        when, node_id, model = leased
        took = time.monotonic() - when
        times = self.item_s.setdefault(node_id, {})
        before = times.get(model)
        times[model] = took if before is None else (
            ITEM_TIME_WEIGHT * took + (1 - ITEM_TIME_WEIGHT) * before)

    async def _send_chunk(self, peer: bytes, request: ChunkRequest) -> None:
        model = st.model_by_sha(self.store, sha256=request.sha256)
        if model is None:
            await self._send(peer, ErrorReply(code="unknown_model",
                                              message=f"no model with sha256 {request.sha256}"))
            return
        data = await asyncio.to_thread(_read_range, model.path, request.offset, request.length)
        self.origin_bytes_sent += len(data)
        await self._send(peer, Chunk(sha256=model.sha256, offset=request.offset,
                                     total_size=model.size), data)

    async def _tick(self) -> None:
        """Check liveness CHECKS_PER_INTERVAL times per heartbeat interval (so a silent
        node is found within a quarter interval of its deadline); once per interval send
        heartbeats and requeue expired and orphaned leases."""
        last_check = time.monotonic()
        passes = 0
        while True:
            await asyncio.sleep(self.interval_s / CHECKS_PER_INTERVAL)
            now = time.monotonic()
            stall = now - last_check - self.interval_s / CHECKS_PER_INTERVAL
            last_check = now
            if stall > self.interval_s:
                # the hub itself was not listening (a blocked loop): what live peers sent
                # meanwhile waits in the socket; read it before judging anyone
                log.warning("hub loop stalled for %.1f s; reading what arrived meanwhile "
                            "before judging liveness", stall)
                await self._catch_up(until=now + self.interval_s)
                now = last_check = time.monotonic()
            if await self._drop_silent(now):
                await self.push_topology()
                await self._replace()
            passes += 1
            if passes % CHECKS_PER_INTERVAL == 0:
                await self._every_interval(now)

    async def _catch_up(self, *, until: float) -> None:
        """Yield to the receive loop while messages wait in the socket (at most `until`,
        so that a hub kept busy by chatty agents still judges the silent ones). First a
        check period: if the whole process was stopped, ZeroMQ's I/O thread is still
        taking in what the kernel buffered meanwhile."""
        await asyncio.sleep(self.interval_s / CHECKS_PER_INTERVAL)
        while int(self._socket.get(zmq.EVENTS)) & zmq.POLLIN and time.monotonic() < until:
            await asyncio.sleep(0)

    async def _drop_silent(self, now: float) -> bool:
        """Drop the sessions of nodes silent past their liveness; whether any was."""
        dropped = False
        # judged as at the next check: a node is dropped no later than liveness × interval
        # after it was last heard, not up to a check period after that
        upcoming = now + self.interval_s / CHECKS_PER_INTERVAL
        for peer, session in list(self.peers.items()):
            if not peer_alive(last_seen=session.last_seen, now=upcoming,
                              interval_s=self.interval_s, liveness=self.liveness):
                del self.peers[peer]
                # its leases go back to the queue now, not when they expire; a late
                # result from it no longer matches a live lease and is discarded
                requeued = self._requeued(st.requeue_node_leases(self.store,
                                                                 node_id=session.node_id))
                self._queue_at = -math.inf
                log.warning("node %d fell silent; dropped, %d leased items requeued",
                            session.node_id, requeued)
                dropped = True
        return dropped

    async def _every_interval(self, now: float) -> None:
        seen: dict[int, Any] = {}
        wall = utcnow()
        for peer, session in list(self.peers.items()):
            # when it was last heard, so the API's state agrees with the hub's
            seen[session.node_id] = wall - timedelta(seconds=max(0.0, now - session.last_seen))
            await self._send(peer, Heartbeat(seq=int(now)))
        st.touch_nodes(self.store, seen=seen)
        for origin in [o for o in self._paths if o not in self.peers]:
            del self._paths[origin]  # unregistered senders: keep no routes for them
        requeued = self._requeued(st.requeue_expired(self.store))
        if requeued:
            log.warning("requeued %d work items whose lease expired", requeued)
        if now - self._started > self.adopt_s:  # nodes had time to come back
            orphans = self._requeued(st.requeue_orphans(
                self.store, live={s.node_id for s in self.peers.values()}))
            if orphans:
                log.warning("requeued %d work items leased to nodes that are gone", orphans)
        for lease_id, (when, _node, _model) in list(self._leased_at.items()):
            if now - when > self.lease_s:
                del self._leased_at[lease_id]
        await self._replace()

    def _requeued(self, count: int) -> int:
        self.leases_requeued += count
        if count:
            self._queue_at = -math.inf  # the scheduler's view is out of date
        return count

    async def _replace(self) -> None:
        """Place models again (the queue and the fleet change); tell nodes whose models
        changed."""
        before, self._placed = self._placed, self.placement()
        for peer, session in list(self.peers.items()):
            if before.get(session.node_id) != self._placed.get(session.node_id):
                await self._send(peer, self.desired_workers(session))


def _read_range(path: str, offset: int, length: int) -> bytes:
    with open(path, "rb") as handle:
        handle.seek(offset)
        return handle.read(length)
