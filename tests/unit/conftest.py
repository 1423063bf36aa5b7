"""Shared fixtures of the unit tests: a real store, on SQLite and on PostgreSQL, and the API.

Every test that takes `store` (or `client`) runs twice: on a SQLite file in a temporary
folder, and in a new schema of the real PostgreSQL test server (`tests/support/postgres.py`;
skipped locally, failed in CI, when there is no server).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from coordinator import store as st
from coordinator.api import create_app
from tests.support.postgres import fresh_schema


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of a new, empty store on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/s.db"
    else:
        with fresh_schema() as url:
            yield url


@pytest.fixture
def store(store_url: str) -> Iterator[st.Store]:
    store = st.Store(store_url)
    yield store
    store.close()


@pytest.fixture
def client(store: st.Store) -> TestClient:
    return TestClient(create_app(store=store))
