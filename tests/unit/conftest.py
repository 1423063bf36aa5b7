"""Shared fixtures of the unit tests: a real SQLite store in a temporary folder, and the API."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from coordinator import store as st
from coordinator.api import create_app


@pytest.fixture
def store(tmp_path: Path) -> st.Store:
    return st.Store(f"sqlite:///{tmp_path}/s.db")


@pytest.fixture
def client(store: st.Store) -> TestClient:
    return TestClient(create_app(store=store))
