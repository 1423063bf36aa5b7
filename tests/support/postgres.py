"""A real PostgreSQL server for the store tests: each test gets a new, empty schema.

The server is the one named by SLMFLEET_TEST_POSTGRES_URL (`make test` sets it), else the
local one that `make postgres` (deploy/dev/postgres.sh) sets up. If it cannot be reached,
a test that needs it is skipped with the reason on a developer machine and fails in CI
(`tests.support.requirements.missing`).
"""

from __future__ import annotations

import functools
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import create_engine, make_url, text
from sqlalchemy.engine import URL, Engine
from sqlalchemy.exc import SQLAlchemyError

from tests.support.requirements import missing

URL_ENV = "SLMFLEET_TEST_POSTGRES_URL"
DEFAULT_URL = "postgresql+psycopg://slmfleet:slmfleet@127.0.0.1:5432/slmfleet_test"


def server_url() -> URL:
    return make_url(os.environ.get(URL_ENV) or DEFAULT_URL)


@functools.cache
def _admin() -> Engine:
    return create_engine(server_url(), connect_args={"connect_timeout": 5})


@functools.cache
def _unreachable() -> str | None:
    """Why the test server cannot be used (asked once a run), or None."""
    try:
        with _admin().connect():
            return None
    except (SQLAlchemyError, ImportError) as exc:
        reason = " ".join(str(getattr(exc, "orig", None) or exc).split())
        return (f"no PostgreSQL server for the store tests at "
                f"{server_url().render_as_string(hide_password=True)}: {reason}; run "
                f"`make postgres` (as root), or set {URL_ENV}")


def require_server() -> URL:
    """The test server's URL; skips (locally) or fails (in CI) the test without one."""
    reason = _unreachable()
    if reason is not None:
        missing(reason)
    return server_url()


@contextmanager
def fresh_schema() -> Iterator[str]:
    """A store URL whose connections work in a new, empty schema, dropped afterwards."""
    url = require_server()
    schema = f"test_{uuid.uuid4().hex[:16]}"
    with _admin().begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield url.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(
            hide_password=False)
    finally:
        with _admin().begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
