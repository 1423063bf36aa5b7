"""Seven agents on seven separate hosts (network namespaces with their own stacks, linked
to the coordinator's host through a bridge), so every link is a real network link that
can be cut. A job keeps going while links are cut and an agent is killed, and every
work item is recorded exactly once.

The fleet is still a star (each agent's link goes to the hub); these hosts are where the
overlay's relaying will be tested too.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from coordinator.client import Client
from coordinator.demo import LocalFleet, joined, wait_for, workers_ready
from tests.integration.conftest import TINY, store_rows
from tests.support.netlab import NetLab, required_lab

pytestmark = pytest.mark.integration

HOSTS = 7
TOKEN = "multihost-token"


def agent_name(host: int) -> str:
    return f"host-{host}"


@pytest.fixture(scope="module")
def lab() -> Iterator[NetLab]:
    with required_lab(hosts=HOSTS, subnet=77) as lab:
        yield lab


@pytest.fixture(scope="module")
def fleet(lab: NetLab, tiny_model: Path, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[LocalFleet]:
    with LocalFleet(data_dir=tmp_path_factory.mktemp("multihost"), nodes=0, token=TOKEN,
                    hub_host=lab.gateway) as fleet:
        for host in range(1, HOSTS + 1):
            fleet.spawn_agent(agent_name(host), wrapper=lab.wrapper(host))
        client = joined(fleet, agents=HOSTS, timeout_s=120)
        client.add_model(name=TINY, path=str(tiny_model), threads=1, n_ctx=1024)
        wait_for(f"{HOSTS} workers", lambda: workers_ready(client, TINY, HOSTS) >= HOSTS,
                 fleet=fleet, timeout_s=240)
        yield fleet


def states(client: Client) -> dict[str, str]:
    return {n["name"]: n["state"] for n in client.nodes()}


def kill_agent(fleet: LocalFleet, host: int) -> None:
    """SIGKILL the host's agent (no goodbye) and stop watching it as a fleet process."""
    (process,) = [p for p in fleet.processes
                  if p.poll() is None and agent_name(host) in p.args]  # type: ignore[operator]
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)
    fleet.processes.remove(process)


def test_agents_on_separate_hosts_join_over_real_links(fleet: LocalFleet, lab: NetLab,
                                                       client: Client) -> None:
    assert all(state in ("ready", "busy") for state in states(client).values())
    assert set(states(client)) == {agent_name(h) for h in range(1, HOSTS + 1)}
    lab.cut(HOSTS)  # a cut link silences exactly that host
    try:
        wait_for("the cut host to be unreachable",
                 lambda: states(client)[agent_name(HOSTS)] == "unreachable", fleet=fleet,
                 timeout_s=30)
        assert sum(s == "unreachable" for s in states(client).values()) == 1
    finally:
        lab.restore(HOSTS)
    wait_for("the host to be back", lambda: states(client)[agent_name(HOSTS)] != "unreachable",
             fleet=fleet, timeout_s=90)


def test_a_job_survives_cut_links_and_a_killed_agent_with_every_item_once(
        fleet: LocalFleet, lab: NetLab, client: Client) -> None:
    job = client.submit({"name": "multihost", "models": [TINY], "repeats": 4,
                         "params": {"max_tokens": 8, "n_ctx": 1024},
                         "tasks": [{"task": "classification",
                                    "dataset": "builtin:classification", "limit": 15}]})
    wait_for("the job to get going", lambda: client.job(job["id"])["done"] >= 5,
             fleet=fleet, timeout_s=120)
    lab.cut(1)
    lab.cut(2)
    kill_agent(fleet, 3)
    try:
        assert client.job(job["id"])["state"] == "running", "the faults hit mid-job"
        wait_for("the job to finish on the hosts still reachable",
                 lambda: client.job(job["id"])["state"] != "running", fleet=fleet,
                 timeout_s=300)
    finally:
        lab.restore(1)
        lab.restore(2)
    result = client.job(job["id"])
    assert (result["state"], result["done"], result["failed"]) == ("finished", 60, 0)
    rows = store_rows(fleet, "SELECT status, output, node_id FROM work_items WHERE job_id = ?",
                      job["id"])
    assert len(rows) == 60 and all(r["status"] == "done" and r["output"] is not None
                                   for r in rows)
    nodes = {n["id"]: n["name"] for n in client.nodes()}
    served = {nodes[r["node_id"]] for r in rows}
    assert len(served) >= 4, "the work was spread over the hosts"
    wait_for("the cut hosts to come back", lambda: all(
        states(client)[agent_name(h)] != "unreachable" for h in (1, 2)), fleet=fleet,
        timeout_s=90)
