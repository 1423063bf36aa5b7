"""Model distribution down the striped trees between separate hosts (network namespaces,
links shaped with tc): seven relaying agents with fan-out 2 take each half of a model
from their parent in that stripe's tree, so the coordinator sends the file about once;
when an interior node dies and another node's link is cut mid-transfer, the others
resume from elsewhere and every surviving node ends with the file, sha256 verified.

Workers are kept off (the container runtime without an engine) so that only the
distribution runs."""

from __future__ import annotations

import hashlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from coordinator.client import Client
from coordinator.demo import LocalFleet, joined, wait_for
from node_agent.model_store import ModelStore
from tests.support.netlab import NetLab, required_lab
from tests.support.relay_fleet import join_relaying_agents
from tests.support.tiny_gguf import write_tiny_gguf

pytestmark = pytest.mark.integration

HOSTS = 7
MBIT = 60  # each host's download link
MiB = 2**20


def name(host: int) -> str:
    return f"dist-{host}"


def padded_model(path: Path, *, mib: int, seed: int) -> Path:
    """A valid GGUF (the tiny model) padded to `mib` MiB, so that it takes a while."""
    write_tiny_gguf(path, seed=seed)
    with path.open("ab") as handle:
        handle.write(os.urandom(mib * MiB - path.stat().st_size))
    return path


@pytest.fixture(scope="module")
def lab() -> Iterator[NetLab]:
    with required_lab(hosts=HOSTS, subnet=79) as lab:
        for host in range(1, HOSTS + 1):
            lab.shape(host, mbit=MBIT)
        yield lab


@pytest.fixture(scope="module")
def fleet(lab: NetLab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFleet]:
    no_engine = {"DOCKER_HOST": "unix:///nonexistent/docker.sock"}
    with mock.patch.dict(os.environ, no_engine), \
            LocalFleet(data_dir=tmp_path_factory.mktemp("dist"), nodes=0, token="dist",
                       hub_host=lab.gateway, coordinator_args=("--fanout", "2")) as fleet:
        client = joined(fleet, agents=0)
        join_relaying_agents(fleet, lab, client, name=name, runtime=("--runtime", "docker"))
        wait_for("relayed routes", lambda: topology(client)["mode"] == "overlay",
                 fleet=fleet, timeout_s=60)
        yield fleet


def topology(client: Client) -> dict[str, Any]:
    return client._call("GET", "/topology")  # type: ignore[no-any-return]


def stored(fleet: LocalFleet, host: int, sha256: str) -> Path:
    return fleet.data_dir / name(host) / "models" / f"{sha256}.gguf"


def received(fleet: LocalFleet, host: int, sha256: str) -> int:
    """Bytes the node holds, as its store counts them (chunks land out of order in a
    sparse part file, so the file's size says little)."""
    return ModelStore(fleet.data_dir / name(host) / "models").received(sha256)


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_origin_sends_the_model_about_once(fleet: LocalFleet, client: Client,
                                               tmp_path: Path) -> None:
    model = padded_model(tmp_path / "a.gguf", mib=24, seed=1)
    sha, size = sha256_of(model), model.stat().st_size
    before = topology(client)["distribution"]["origin_bytes_sent"]
    client.add_model(name="striped-a", path=str(model), threads=1, n_ctx=256)
    wait_for("every node to store the model",
             lambda: all(stored(fleet, h, sha).exists() for h in range(1, HOSTS + 1)),
             fleet=fleet, timeout_s=240)
    for host in range(1, HOSTS + 1):
        assert sha256_of(stored(fleet, host, sha)) == sha
    view = topology(client)
    sent = view["distribution"]["origin_bytes_sent"] - before
    assert view["distribution"]["stripes"] == 2
    assert size <= sent <= 2 * size, f"the origin sent {sent / size:.2f}× the model"
    client._call("DELETE", "/models/striped-a")


def test_distribution_survives_a_dead_interior_node_and_a_cut_link(
        fleet: LocalFleet, client: Client, lab: NetLab, tmp_path: Path) -> None:
    model = padded_model(tmp_path / "b.gguf", mib=32, seed=2)
    sha = sha256_of(model)
    client.add_model(name="striped-b", path=str(model), threads=1, n_ctx=256)
    # host 1 heads stripe 0's tree (it serves 3 and 4) and relays 3 and 4's traffic
    wait_for("the transfer to get going", lambda: received(fleet, 2, sha) >= 4 * MiB,
             fleet=fleet, timeout_s=120)
    (first,) = [p for p in fleet.processes
                if p.poll() is None and name(1) in p.args]  # type: ignore[operator]
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(timeout=10)
    fleet.processes.remove(first)
    lab.cut(6)  # 6 serves stripe 1 to 4 (and 1)
    wait_for("the others to go on without them",
             lambda: received(fleet, 2, sha) >= 12 * MiB, fleet=fleet, timeout_s=120)
    lab.restore(6)
    survivors = range(2, HOSTS + 1)
    wait_for("every surviving node to store the model",
             lambda: all(stored(fleet, h, sha).exists() for h in survivors),
             fleet=fleet, timeout_s=300)
    for host in survivors:
        assert sha256_of(stored(fleet, host, sha)) == sha
    assert not stored(fleet, 1, sha).exists()
