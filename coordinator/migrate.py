"""Bringing a store's schema to this version's: the Alembic migrations, run from code.

`upgrade_store` runs every time the coordinator opens its store; there is no alembic.ini.
A new store is built by the migrations (`coordinator/migrations/versions/`). A store made
before slmfleet had migrations (no `alembic_version` table) is stamped with the initial
revision when it has that revision's tables and columns, and refused otherwise; a store
stamped by a newer slmfleet (a revision this one does not know) is refused. Each refusal
is a `SchemaError` that says what to do. On PostgreSQL an advisory lock makes coordinators
that start at the same moment migrate one after the other.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection, create_engine, inspect, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

from coordinator.errors import SchemaError, StoreError

log = logging.getLogger("slmfleet.coordinator")

MIGRATIONS = Path(__file__).parent / "migrations"
INITIAL_REVISION = "0001"
_LOCK_KEY = 0x736C6D66  # "slmf": the advisory lock held while migrating on PostgreSQL


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic's configuration, made in code; `connection` is the one to migrate."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "coordinator/migrations/versions has no revision"
    return head


def upgrade_store(engine: Engine) -> None:
    """Upgrade the store to the newest revision, in one transaction (see the module doc)."""
    url = engine.url.render_as_string(hide_password=True)
    try:
        with engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"),
                                   {"key": _LOCK_KEY})
            current = MigrationContext.configure(connection).get_current_heads()
            config = alembic_config(connection)
            if current:
                _refuse_unknown(current, url=url, dialect=connection.dialect.name)
            elif _made_before_migrations(connection):
                _check_initial_schema(connection, url=url)
                log.info("the store at %s was made before slmfleet had migrations; it has "
                         "the tables of revision %s, so it is stamped with it", url,
                         INITIAL_REVISION)
                command.stamp(config, INITIAL_REVISION)
            command.upgrade(config, "head")
    except DBAPIError as exc:
        hint = ("the user needs to own the database (createdb -O USER DATABASE) or to be "
                "granted CREATE on its schema" if engine.dialect.name == "postgresql" else
                "check that the file and its folder are writable")
        raise StoreError(f"cannot bring the store at {url} up to date: "
                         f"{describe_db_error(exc)}; {hint}") from None


def describe_db_error(exc: DBAPIError) -> str:
    """The driver's own message, on one line."""
    return " ".join(str(exc.orig).split()) or type(exc.orig).__name__


def _refuse_unknown(current: Sequence[str], *, url: str, dialect: str) -> None:
    script = ScriptDirectory.from_config(alembic_config())
    for revision in current:
        try:
            known = script.get_revision(revision) is not None
        except CommandError:
            known = False
        if not known:
            raise SchemaError(
                f"the store at {url} was made by a newer slmfleet (schema revision "
                f"{revision}; this version knows up to {script.get_current_head()}). Upgrade "
                f"slmfleet, or {_elsewhere(dialect)}")


def _made_before_migrations(connection: Connection) -> bool:
    """True if the store (which has no revision stamp) has tables of ours."""
    tables = set(inspect(connection).get_table_names())
    return bool(tables) and bool(tables & set(_initial_columns()))


def _check_initial_schema(connection: Connection, *, url: str) -> None:
    """Refuse, with the fix, an unstamped store that lacks tables or columns of the
    initial revision (it was made by an even older slmfleet)."""
    inspector = inspect(connection)
    present = set(inspector.get_table_names())
    for table, columns in _initial_columns().items():
        if table not in present:
            lacks = f"has no table {table}"
        else:
            have = {c["name"] for c in inspector.get_columns(table)}
            missing = [c for c in columns if c not in have]
            if not missing:
                continue
            lacks = f"table {table} lacks {', '.join(missing)}"
        raise SchemaError(
            f"the store at {url} was made by an older slmfleet: {lacks}. Move it aside "
            f"({_elsewhere(connection.dialect.name)}) and start again; results in it stay "
            "readable with the older version")


def _elsewhere(dialect: str) -> str:
    if dialect == "sqlite":
        return "or use a new --data-dir"
    return "rename that database, or use another --database-url"


@functools.cache
def _initial_columns() -> dict[str, tuple[str, ...]]:
    """The tables and columns that the initial revision creates, read from a scratch
    in-memory SQLite database that it is run on."""
    engine = create_engine("sqlite://")
    alembic_log = logging.getLogger("alembic")
    level = alembic_log.level
    alembic_log.setLevel(logging.WARNING)  # not the store's migration: keep it out of the log
    try:
        with engine.begin() as connection:
            command.upgrade(alembic_config(connection), INITIAL_REVISION)
            inspector = inspect(connection)
            return {table: tuple(c["name"] for c in inspector.get_columns(table))
                    for table in inspector.get_table_names() if table != "alembic_version"}
    finally:
        alembic_log.setLevel(level)
        engine.dispose()
