"""Relaying along the overlay between separate hosts (network namespaces): seven agents
with fan-out 2, so only the root's two children link to the hub and everyone else is
relayed hop by hop; when an interior relay dies mid-job, its subtree moves to other
routes and every work item is still recorded exactly once."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from coordinator.client import Client
from coordinator.demo import LocalFleet, joined, wait_for, workers_ready
from tests.integration.conftest import TINY, store_rows
from tests.support.netlab import NetLab, required_lab
from tests.support.relay_fleet import join_relaying_agents

pytestmark = pytest.mark.integration

HOSTS = 7
TOKEN = "relay-token"


def name(host: int) -> str:
    return f"relay-{host}"


@pytest.fixture(scope="module")
def lab() -> Iterator[NetLab]:
    with required_lab(hosts=HOSTS, subnet=78) as lab:
        yield lab


@pytest.fixture(scope="module")
def fleet(lab: NetLab, tiny_model: Path, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[LocalFleet]:
    with LocalFleet(data_dir=tmp_path_factory.mktemp("relay"), nodes=0, token=TOKEN,
                    hub_host=lab.gateway, coordinator_args=("--fanout", "2")) as fleet:
        client = joined(fleet, agents=0)
        join_relaying_agents(fleet, lab, client, name=name)
        client.add_model(name=TINY, path=str(tiny_model), threads=1, n_ctx=1024)
        wait_for(f"{HOSTS} workers", lambda: workers_ready(client, TINY, HOSTS) >= HOSTS,
                 fleet=fleet, timeout_s=240)
        yield fleet


def topology(client: Client) -> dict[str, Any]:
    return client._call("GET", "/topology")  # type: ignore[no-any-return]


def via(client: Client) -> dict[str, list[int] | None]:
    return {row["name"]: row["via"] for row in topology(client)["nodes"][1:]}


def test_traffic_is_relayed_along_the_tree(fleet: LocalFleet, client: Client) -> None:
    expected = {name(1): [], name(2): [], name(3): [1], name(4): [1], name(5): [2],
                name(6): [2], name(7): [3, 1]}
    wait_for("every node to be relayed along its tree path",
             lambda: via(client) == expected, fleet=fleet, timeout_s=60)
    assert topology(client)["mode"] == "overlay"


def test_a_dead_relay_is_routed_around_and_the_job_finishes_once(
        fleet: LocalFleet, client: Client) -> None:
    job = client.submit({"name": "relayed", "models": [TINY], "repeats": 4,
                         "params": {"max_tokens": 8, "n_ctx": 1024},
                         "tasks": [{"task": "classification",
                                    "dataset": "builtin:classification", "limit": 15}]})
    wait_for("the job to get going", lambda: client.job(job["id"])["done"] >= 5,
             fleet=fleet, timeout_s=120)
    (relay1,) = [p for p in fleet.processes
                 if p.poll() is None and name(1) in p.args]  # type: ignore[operator]
    os.killpg(relay1.pid, signal.SIGKILL)  # position 1 relays for 3, 4 and (via 3) 7
    relay1.wait(timeout=10)
    fleet.processes.remove(relay1)

    def rerouted() -> bool:
        routes = via(client)
        return all(routes[name(h)] is not None and 1 not in (routes[name(h)] or [])
                   for h in (3, 4, 7))

    wait_for("the subtree of the dead relay to find other routes", rerouted, fleet=fleet,
             timeout_s=60)
    wait_for("the job to finish", lambda: client.job(job["id"])["state"] != "running",
             fleet=fleet, timeout_s=300)
    result = client.job(job["id"])
    assert (result["state"], result["done"], result["failed"]) == ("finished", 60, 0)
    rows = store_rows(fleet, "SELECT status, node_id FROM work_items WHERE job_id = ?",
                      job["id"])
    assert len(rows) == 60 and all(r["status"] == "done" for r in rows)
