"""Faults injected into a real fleet while it runs a real job: every item is still done
exactly once, and no lease is left open.

Each test starts its own coordinator and two agents (own data dir, own ports) with
llama.cpp workers on the tiny model, submits a classification job and, once some items
are done and the faulty node holds a lease, kills, freezes or restarts a process, or
breaks the node's disk or model file. The coordinator's default settings apply
(one frozen-agent case turns backup copies off): heartbeats every 1 s, a peer
unreachable after 3 silent intervals, leases of 300 s.
Faults are timed by what the store and the API show, never by the clock.
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from coordinator.client import ClientError
from coordinator.demo import LocalFleet
from tests.integration.conftest import TINY, TOKEN, store_rows
from tests.support.faults import FaultFleet, exited, flip_bytes, tmpfs

pytestmark = pytest.mark.integration

FAULTY = "local-2"  # the node a fault hits
HEALTHY = "local-1"


@pytest.fixture
def faulty(tmp_path: Path, tiny_model: Path) -> Iterator[FaultFleet]:
    """A fleet of its own: a coordinator and two agents with the tiny model's workers
    ready; everything it ran is ended afterwards, whatever the test did to it."""
    fleet = LocalFleet(data_dir=tmp_path / "fleet", nodes=2, token=TOKEN)
    with FaultFleet.running(fleet, model=TINY, path=tiny_model) as running:
        yield running


def submit(faulty: FaultFleet, *, limit: int, repeats: int = 2) -> dict[str, Any]:
    """A classification job of `limit` items × `repeats`: a few seconds on two nodes."""
    return faulty.client.submit({
        "name": "under-fault", "models": [TINY], "params": {"max_tokens": 32},
        "tasks": [{"task": "classification", "dataset": "builtin:classification"}],
        "limit": limit, "repeats": repeats})


def wait_midway(faulty: FaultFleet, job: dict[str, Any], *, timeout_s: float = 90) -> None:
    """Wait until some items of `job` are done and a third or more are still to do
    (polled often: the tiny model does dozens of items a second)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        view = faulty.client.job(job["id"])
        if view["state"] != "running" or view["pending"] < job["total"] // 3:
            raise AssertionError(f"job {job['id']} got too far before the fault could be "
                                 f"injected ({view['done']} of {view['total']} done): "
                                 "give it more items")
        if view["done"] >= 3:
            return
        time.sleep(0.05)
    raise AssertionError(f"job {job['id']} did not get under way within {timeout_s} s")


def finish(faulty: FaultFleet, job_id: int, *, timeout_s: float = 120) -> dict[str, Any]:
    """The job once it has stopped running (API errors while the coordinator is away are
    waited out)."""
    deadline = time.monotonic() + timeout_s
    view: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            view = faulty.client.job(job_id)
        except ClientError:
            view = {}
        if view.get("state", "running") != "running":
            return view
        time.sleep(0.2)
    open_items = store_rows(faulty.fleet, "SELECT id, status, attempts, lease_node FROM "
                            "work_items WHERE job_id = ? AND status IN ('pending', 'leased')",
                            job_id)
    raise AssertionError(f"job {job_id} still running after {timeout_s} s: {view}; open "
                         f"items: {[dict(r) for r in open_items]}; logs in "
                         f"{faulty.fleet.data_dir / 'logs'}")


def assert_done_exactly_once(fleet: LocalFleet, job_id: int) -> list[sqlite3.Row]:
    """The job finished, and each of its items is one row, done, with its result."""
    (job,) = store_rows(fleet, "SELECT state, total FROM jobs WHERE id = ?", job_id)
    assert job["state"] == "finished"
    rows = store_rows(fleet, "SELECT * FROM work_items WHERE job_id = ?", job_id)
    assert len(rows) == job["total"]
    keys = Counter((r["model"], r["task"], r["dataset"], r["item_key"], r["repeat"])
                   for r in rows)
    assert [key for key, n in keys.items() if n != 1] == []
    assert [(r["id"], r["status"], r["error"]) for r in rows if r["status"] != "done"] == []
    # prediction is NULL where the output names no label (random weights mostly don't)
    assert [r["id"] for r in rows if r["output"] is None or r["score"] is None
            or r["node_id"] is None or r["finished_at"] is None] == []
    return rows


def assert_no_open_leases(fleet: LocalFleet, job_id: int) -> None:
    """No item of the job is leased or keeps a lease's id, holder or deadline."""
    columns = [c["name"] for c in store_rows(fleet, "PRAGMA table_info(work_items)")
               if c["name"].startswith(("lease_", "backup_")) and c["name"] != "lease_rank"]
    held = " OR ".join(f"{column} IS NOT NULL" for column in columns)
    rows = store_rows(fleet, f"SELECT id, status, {', '.join(columns)} FROM work_items "
                      f"WHERE job_id = ? AND (status = 'leased' OR {held})", job_id)
    assert [dict(r) for r in rows] == []


def items(fleet: LocalFleet, ids: list[int]) -> dict[int, dict[str, Any]]:
    marks = ", ".join("?" * len(ids))
    return {r["id"]: dict(r) for r in store_rows(
        fleet, f"SELECT * FROM work_items WHERE id IN ({marks})", *ids)}


def served_by(faulty: FaultFleet, name: str, *, job_id: int) -> int:
    """How many of the job's items agent `name` has done."""
    return len(store_rows(faulty.fleet, "SELECT id FROM work_items WHERE job_id = ? AND "
                          "status = 'done' AND node_id = ?", job_id, faulty.node_id(name)))


def metric(faulty: FaultFleet, name: str) -> float:
    """A value of the coordinator's Prometheus metrics (GET /metrics)."""
    text = httpx.get(f"{faulty.fleet.api_url}/metrics", timeout=10).text
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    assert found is not None, f"no metric {name} in:\n{text}"
    return float(found.group(1))


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_agent_killed_mid_job(faulty: FaultFleet) -> None:
    """SIGKILL of an agent (no goodbye): the hub drops it after 3 silent heartbeats and
    its lease goes to the other node."""
    job = submit(faulty, limit=30)
    wait_midway(faulty, job)
    held = faulty.freeze_holding_lease(FAULTY, job_id=job["id"])
    workers = faulty.workers_of(FAULTY)
    faulty.kill(FAULTY)

    assert finish(faulty, job["id"])["state"] == "finished"
    faulty.wait(f"{FAULTY} to be unreachable",
                lambda: faulty.node(FAULTY)["state"] in ("unreachable", "dead"))
    survivor = faulty.node_id(HEALTHY)
    for item in items(faulty.fleet, held).values():
        assert (item["status"], item["node_id"]) == ("done", survivor)
    assert_done_exactly_once(faulty.fleet, job["id"])
    assert_no_open_leases(faulty.fleet, job["id"])
    # its llama.cpp worker, now an orphan, must not live on holding the model in memory
    assert len(workers) == 1
    faulty.wait(f"the worker of the killed {FAULTY} to exit",
                lambda: exited(workers[0]), timeout_s=15)


def test_worker_killed_mid_item(faulty: FaultFleet) -> None:
    """SIGKILL of a llama.cpp worker while it serves an item: the agent lives on, starts
    a new worker, and the item is done all the same."""
    job = submit(faulty, limit=30)
    wait_midway(faulty, job)
    agent = faulty.process(FAULTY)
    (worker,) = faulty.workers_of(FAULTY)
    # frozen while its agent holds a lease, the worker cannot answer it before it dies
    held = faulty.freeze_holding_lease(FAULTY, job_id=job["id"], pid=worker.pid)
    worker.kill()
    faulty.frozen.discard(worker.pid)

    def replaced() -> bool:
        running = faulty.workers_of(FAULTY)
        return len(running) == 1 and running[0].pid != worker.pid
    faulty.wait(f"{FAULTY} to start a new worker", replaced)
    assert finish(faulty, job["id"])["state"] == "finished"

    assert faulty.process(FAULTY).pid == agent.pid, "the agent itself lived on"
    assert f"worker for {TINY} exited with code -9" in faulty.log(FAULTY)
    for item in items(faulty.fleet, held).values():
        assert item["status"] == "done"
    assert_done_exactly_once(faulty.fleet, job["id"])
    assert_no_open_leases(faulty.fleet, job["id"])


def test_coordinator_restarted_mid_job(faulty: FaultFleet) -> None:
    """SIGKILL of the coordinator, then a new one on the same data dir and ports: the
    agents register again by themselves and the job resumes from the store."""
    job = submit(faulty, limit=30)
    wait_midway(faulty, job)
    before = {name: faulty.registrations(name) for name in (HEALTHY, FAULTY)}
    # frozen first, so that it dies with leases out (the store, in WAL mode, reads on)
    out = faulty.freeze_when(faulty.process("coordinator").pid,
                             lambda: faulty.leased(job_id=job["id"]),
                             what=f"items of job {job['id']} were leased")
    holders = {i["id"]: i["lease_node"] for i in items(faulty.fleet, out).values()}
    faulty.start_again(faulty.kill("coordinator"))

    for name in (HEALTHY, FAULTY):
        faulty.wait_back(name, registrations=before[name])
    assert finish(faulty, job["id"])["state"] == "finished"
    # re-adopted: each lease out at the restart was kept by the node that held it, which
    # named it when it registered again, and its result (sent again) was recorded
    assert {i: item["node_id"] for i, item in items(faulty.fleet, out).items()} == holders
    assert {item["attempts"] for item in items(faulty.fleet, out).values()} == {1}
    assert_done_exactly_once(faulty.fleet, job["id"])
    assert_no_open_leases(faulty.fleet, job["id"])


@pytest.mark.parametrize("backups", [False, True], ids=["no-backups", "backups"])
def test_agent_frozen_past_its_lease_changes_nothing_when_it_wakes(
        tmp_path: Path, tiny_model: Path, backups: bool) -> None:
    """SIGSTOP of an agent holding a lease until the coordinator gives up on it (after 3
    silent heartbeats, well before the 300 s lease expires) and the other node has done
    its items; then SIGCONT.

    With `--no-backups` the other node gets the items when the hub requeues the frozen
    node's leases; the late results reach the coordinator after the agent registers
    again, and are discarded and counted. With backup copies (the default) the other
    node may copy the items first, while the frozen node is merely silent: the copy
    wins, and the woken agent either gets the cancel before its worker's result (it logs
    the cancel and sends nothing) or after (the coordinator discards the result). Which
    comes first is a race inside the woken agent; each held item must end one of the
    two ways."""
    fleet = LocalFleet(data_dir=tmp_path / "fleet", nodes=2, token=TOKEN,
                       coordinator_args=() if backups else ("--no-backups",))
    with FaultFleet.running(fleet, model=TINY, path=tiny_model) as faulty:
        job = submit(faulty, limit=30)
        wait_midway(faulty, job)
        held = faulty.freeze_holding_lease(FAULTY, job_id=job["id"])
        frozen = faulty.process(FAULTY).pid
        faulty.wait(f"{FAULTY} to be unreachable",
                    lambda: faulty.node(FAULTY)["state"] == "unreachable")
        faulty.wait(f"{HEALTHY} to do the items {FAULTY} held", lambda: all(
            i["status"] == "done" for i in items(faulty.fleet, held).values()))
        first = items(faulty.fleet, held)
        assert {i["node_id"] for i in first.values()} == {faulty.node_id(HEALTHY)}
        registered = faulty.registrations(FAULTY)
        faulty.thaw(frozen)

        faulty.wait_back(FAULTY, registrations=registered)
        copied = {i for i in held if re.search(
            rf"item {i} runs late on node \d+; a backup copy starts", faulty.log("coordinator"))}
        assert backups or not copied, "a backup copy started with --no-backups"

        def settled() -> bool:  # each held item: its late result discarded, or cancelled
            hub, agent = faulty.log("coordinator"), faulty.log(FAULTY)
            discarded = {i for i in held if re.search(
                rf"discarded a stale result for item {i}$", hub, re.MULTILINE)}
            cancels = agent.count("cancelled: another node finished its item first")
            return discarded == set(held) or (
                discarded | copied == set(held) and cancels >= len(held) - len(discarded))
        faulty.wait(f"the late results for items {held} to be discarded or cancelled",
                    settled)
        assert finish(faulty, job["id"])["state"] == "finished"
        assert items(faulty.fleet, held) == first, "a late result changed a recorded item"
        if not backups:
            assert metric(faulty, "slmfleet_results_discarded") >= len(held)
        assert_done_exactly_once(faulty.fleet, job["id"])
        assert_no_open_leases(faulty.fleet, job["id"])


def test_flapping_agent(faulty: FaultFleet) -> None:
    """An agent stopped (SIGTERM) while it holds a lease and started again, three times
    in a row: each time it comes back, and the leases it dropped are done by someone."""
    job = submit(faulty, limit=100, repeats=6)
    wait_midway(faulty, job)
    registered, node = faulty.registrations(FAULTY), faulty.node_id(FAULTY)
    for _ in range(3):
        faulty.wait(f"{FAULTY} to hold a lease",
                    lambda: bool(faulty.leased(job_id=job["id"], node_id=node)))
        stopped = faulty.stop(FAULTY)
        faulty.start_again(stopped)
        faulty.wait_back(FAULTY, registrations=registered)
        registered = faulty.registrations(FAULTY)
        assert faulty.client.job(job["id"])["state"] == "running", "make the job longer"

    assert finish(faulty, job["id"])["state"] == "finished"
    assert_done_exactly_once(faulty.fleet, job["id"])
    assert_no_open_leases(faulty.fleet, job["id"])


def test_model_cache_on_a_full_disk(tmp_path: Path, tiny_model: Path) -> None:
    """An agent whose model cache is a tmpfs smaller than the model, next to a healthy
    one: the job is done by the healthy node, and the small one says why it cannot help."""
    fleet = LocalFleet(data_dir=tmp_path / "fleet", nodes=1, token=TOKEN)
    small = "small-disk"
    # the agent's cache dir is <data_dir>/<name>: mount the small disk right there
    with tmpfs(fleet.data_dir / small, size_kib=256), FaultFleet.running(
            fleet, model=TINY, path=tiny_model, also=[small], ready=1) as faulty:
        def errors() -> str:
            return " ".join(next((n["errors"] for n in faulty.client.nodes()
                                  if n["name"] == small), []))
        faulty.wait(f"{small} to report its full disk",
                    lambda: "No space left on device" in errors())
        job = submit(faulty, limit=10)
        assert finish(faulty, job["id"])["state"] == "finished"

        reported = errors()
        assert f"download of {TINY}" in reported, reported
        assert "free disk space or move the cache" in reported, reported
        assert not [w for w in faulty.node(small)["workers"] if w["state"] in ("ready", "busy")]
        assert not list((fleet.data_dir / small / "models").glob("*.gguf"))
        rows = assert_done_exactly_once(fleet, job["id"])
        assert {r["node_id"] for r in rows} == {faulty.node_id(HEALTHY)}
        assert_no_open_leases(fleet, job["id"])


def test_corrupt_model_in_the_cache(faulty: FaultFleet) -> None:
    """Bytes flipped in an agent's cached model while it is stopped: started again, it
    must notice (sha256) and fetch the model again, or refuse it clearly; never serve
    items from a corrupt copy."""
    (model,) = [m for m in faulty.client.models() if m["name"] == TINY]
    cached = faulty.fleet.data_dir / FAULTY / "models" / f"{model['sha256']}.gguf"
    job = submit(faulty, limit=30)
    wait_midway(faulty, job)
    registered = faulty.registrations(FAULTY)
    stopped = faulty.stop(FAULTY)
    served_before = served_by(faulty, FAULTY, job_id=job["id"])
    flip_bytes(cached, offset=-4096, count=64)  # tensor data: llama.cpp loads it anyway
    assert sha256_of(cached) != model["sha256"]
    faulty.start_again(stopped)

    def settled() -> bool:  # back with a worker, or back and saying what is wrong
        node = faulty.node(FAULTY)
        return faulty.registrations(FAULTY) > registered and node["state"] != "joining" \
            and (bool(node["errors"]) or any(w["state"] in ("ready", "busy")
                                             for w in node["workers"]))
    faulty.wait(f"{FAULTY} to come back", settled)
    assert finish(faulty, job["id"])["state"] == "finished"

    node = faulty.node(FAULTY)
    refetched = cached.exists() and sha256_of(cached) == model["sha256"]
    refused = any("sha256" in e or "corrupt" in e for e in node["errors"])
    assert refetched or refused, (
        f"{FAULTY} kept a corrupt copy of {TINY} (sha256 {sha256_of(cached)[:12]}, "
        f"expected {model['sha256'][:12]}), reported no error ({node['errors']}), ran a "
        f"worker on it ({node['workers']}) and served "
        f"{served_by(faulty, FAULTY, job_id=job['id']) - served_before} items with it")
    assert_done_exactly_once(faulty.fleet, job["id"])
    assert_no_open_leases(faulty.fleet, job["id"])
