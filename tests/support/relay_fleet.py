"""Relaying agents on separate hosts (a NetLab's namespaces), joined one by one so that
join order, and so overlay position, equals host number."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from coordinator.client import Client
from coordinator.demo import LocalFleet, wait_for
from tests.support.netlab import NetLab

RELAY_PORT = 7070


def join_relaying_agents(fleet: LocalFleet, lab: NetLab, client: Client, *,
                         name: Callable[[int], str], runtime: Sequence[str] = (
                             "--runtime", "process")) -> None:
    """Start an agent on each of the lab's hosts, relaying on its own address, each
    after the one before has joined."""
    for host in range(1, lab.hosts + 1):
        fleet.spawn_agent(name(host), *runtime, "--relay-bind", f"0.0.0.0:{RELAY_PORT}",
                          "--relay-address", f"{lab.address(host)}:{RELAY_PORT}",
                          wrapper=lab.wrapper(host))
        wait_for(f"{name(host)} to join", lambda h=host: len(client.nodes()) >= h,
                 fleet=fleet, timeout_s=60)
