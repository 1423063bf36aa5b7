"""Fixtures for integration tests: a real coordinator and real agents as child processes.

The fleet is the same `LocalFleet` the demo uses — each part is its own OS process
talking real ZeroMQ over loopback — with a tiny random-weight GGUF that the suite writes
itself, so a whole job runs in seconds through real llama.cpp workers.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from coordinator.client import Client
from coordinator.demo import LocalFleet, joined, wait_for, workers_ready
from tests.support.requirements import require_module
from tests.support.tiny_gguf import write_tiny_gguf

TOKEN = "integration-token"
TINY = "tiny-llama"


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_module("llama_cpp", install_hint="run `make test` to install llama-cpp-python")
    return write_tiny_gguf(tmp_path_factory.mktemp("models") / "tiny.gguf")


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[LocalFleet]:
    """A coordinator and two agents with the tiny model deployed and its workers ready."""
    with LocalFleet(data_dir=tmp_path_factory.mktemp("fleet"), nodes=2, token=TOKEN) as fleet:
        client = joined(fleet, agents=2)
        client.add_model(name=TINY, path=str(tiny_model), threads=1, n_ctx=2048)
        wait_for("both workers to load the tiny model",
                 lambda: workers_ready(client, TINY, 2) >= 2, fleet=fleet, timeout_s=120)
        yield fleet


@pytest.fixture
def client(fleet: LocalFleet) -> Client:
    """A client of the module's `fleet` (whichever fixture of that name the module uses)."""
    return Client(fleet.api_url, timeout_s=10)


def store_rows(fleet: LocalFleet, sql: str, *args: object) -> list[sqlite3.Row]:
    """Read the coordinator's SQLite store directly, as an operator would."""
    db = fleet.data_dir / "coordinator" / "slmfleet.db"
    with sqlite3.connect(db) as connection:
        connection.row_factory = sqlite3.Row
        return list(connection.execute(sql, args))
