"""Prometheus metrics of the coordinator: fleet, jobs, work items, and what the hub refused.

Rendered on request from the store (a fresh registry each time, so nothing is cached
between scrapes): nodes by state with their CPU, memory and temperature, jobs by state,
work items by status, and counters of discarded results, rejected wire messages, backup
copies and requeued leases.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, generate_latest

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def render_metrics(*, nodes: Sequence[Mapping[str, Any]], counts: Mapping[str, Mapping[str, int]],
                   discarded_results: int, rejected_messages: int,
                   origin_bytes_sent: int = 0, backups_started: int = 0,
                   backups_cancelled: int = 0, leases_requeued: int = 0) -> bytes:
    """The Prometheus text exposition of the coordinator's current state."""
    registry = CollectorRegistry()
    by_state = Gauge("slmfleet_nodes", "Nodes by state.", ["state"], registry=registry)
    cpu = Gauge("slmfleet_node_cpu_percent", "CPU use of a node.", ["node"],
                registry=registry)
    memory = Gauge("slmfleet_node_memory_used_percent", "Memory use of a node.", ["node"],
                   registry=registry)
    temperature = Gauge("slmfleet_node_cpu_temp_celsius", "CPU temperature of a node.",
                        ["node"], registry=registry)
    states: dict[str, int] = {}
    for node in nodes:
        states[node["state"]] = states.get(node["state"], 0) + 1
        health = node.get("metrics") or {}
        if "cpu_percent" in health:
            cpu.labels(node["name"]).set(health["cpu_percent"])
            memory.labels(node["name"]).set(health["mem_used_percent"])
        if health.get("cpu_temp_c") is not None:
            temperature.labels(node["name"]).set(health["cpu_temp_c"])
    for state, number in states.items():
        by_state.labels(state).set(number)
    jobs = Gauge("slmfleet_jobs", "Jobs by state.", ["state"], registry=registry)
    for state, number in counts["jobs"].items():
        jobs.labels(state).set(number)
    items = Gauge("slmfleet_work_items", "Work items by status.", ["status"],
                  registry=registry)
    for status, number in counts["items"].items():
        items.labels(status).set(number)
    Gauge("slmfleet_results_discarded", "Late or duplicate results discarded since start.",
          registry=registry).set(discarded_results)
    Gauge("slmfleet_wire_messages_rejected", "Malformed or unauthenticated messages the hub "
          "refused since start.", registry=registry).set(rejected_messages)
    Gauge("slmfleet_origin_model_bytes_sent", "Model bytes the coordinator served since "
          "start (the rest travel between nodes).", registry=registry).set(origin_bytes_sent)
    Gauge("slmfleet_backup_copies_started", "Second copies of late items started near a "
          "job's end since start.", registry=registry).set(backups_started)
    Gauge("slmfleet_backup_copies_cancelled", "Copies cancelled because the other copy of "
          "their item finished first, since start.", registry=registry).set(backups_cancelled)
    Gauge("slmfleet_leases_requeued", "Leased items put back in the queue since start "
          "(node lost, lease expired, lease not held after a reconnect).",
          registry=registry).set(leases_requeued)
    return generate_latest(registry)
