"""The store's schema and URL: migrations on SQLite and PostgreSQL, and the errors an operator
sees for a bad URL, an unreachable server, and a store of another slmfleet version."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import MetaData, create_engine, insert, inspect, text
from typer.testing import CliRunner

from coordinator import store as st
from coordinator.cli import app
from coordinator.db import Base, JobRow, parse_store_url
from coordinator.errors import SchemaError, StoreError
from coordinator.migrate import INITIAL_REVISION, alembic_config, head_revision
from tests.support.postgres import require_server

SECRET = "hunter2"
UNREACHABLE = f"postgresql+psycopg://slmfleet:{SECRET}@127.0.0.1:1/slmfleet"  # nothing on :1


def revision_of(url: str) -> list[str]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return list(connection.scalars(text("SELECT version_num FROM alembic_version")))
    finally:
        engine.dispose()


def metadata_before_migrations() -> MetaData:
    """The models as they were before migrations: without what later revisions add."""
    before = MetaData()
    for table in Base.metadata.sorted_tables:
        table.to_metadata(before)
    nodes = before.tables["nodes"]
    nodes._columns.remove(nodes.c.draining)  # revision 0002
    items = before.tables["work_items"]  # revision 0003
    for column in ("backup_lease_id", "backup_node", "backup_deadline", "lease_rank"):
        items._columns.remove(items.c[column])
    items.indexes = {i for i in items.indexes
                     if i.name not in ("ix_work_items_open", "ix_work_items_lease")}
    return before


def make_pre_migration_store(url: str) -> None:
    """A store as slmfleet made it before it had migrations: create_all, no stamp."""
    engine = create_engine(url)
    try:
        metadata_before_migrations().create_all(engine)
        with engine.begin() as connection:
            connection.execute(insert(JobRow).values(name="old job", spec={}, state="finished",
                                                     total=0, created_at=st.utcnow()))
    finally:
        engine.dispose()


def run_sql(url: str, *statements: str) -> None:
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            for statement in statements:
                connection.execute(text(statement))
    finally:
        engine.dispose()


# --- migrations -----------------------------------------------------------------------


def test_the_migrations_build_exactly_the_schema_of_the_models(store: st.Store) -> None:
    with store.engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
    assert revision_of(store.url) == [head_revision()]


def test_on_sqlite_the_initial_revision_is_what_create_all_made_before_migrations(
        tmp_path: Path) -> None:
    """So a store made before migrations may be stamped with it as it is."""
    old, new = tmp_path / "old.db", tmp_path / "new.db"
    metadata_before_migrations().create_all(create_engine(f"sqlite:///{old}"))
    with create_engine(f"sqlite:///{new}").begin() as connection:
        command.upgrade(alembic_config(connection), INITIAL_REVISION)

    def ddl(db: Path) -> list[tuple[str, str, list[str]]]:
        """Each object's definition, its lines sorted (the order of a table's constraints
        depends on how its metadata was built, and does not matter to SQLite)."""
        with sqlite3.connect(db) as connection:
            rows = connection.execute("SELECT type, name, sql FROM sqlite_master "
                                      "WHERE tbl_name != 'alembic_version'")
            return sorted((kind, name, sorted(line.strip().rstrip(",")
                                              for line in (sql or "").splitlines()))
                          for kind, name, sql in rows)

    assert ddl(old) == ddl(new)


def test_opening_a_store_again_keeps_its_data(store: st.Store) -> None:
    job = st.create_job(store, name="kept", spec={}, items=[])
    again = st.Store(store.url)
    try:
        assert [j.name for j in st.list_jobs(again)] == ["kept"]
        assert st.get_job(again, job_id=job.id).name == "kept"
    finally:
        again.close()
    assert revision_of(store.url) == [head_revision()]


def test_a_store_made_before_migrations_is_stamped_and_kept(store_url: str) -> None:
    make_pre_migration_store(store_url)
    store = st.Store(store_url)
    try:
        assert revision_of(store_url) == [head_revision()]
        assert [j.name for j in st.list_jobs(store)] == ["old job"]
        with store.engine.connect() as connection:
            assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
    finally:
        store.close()


@pytest.mark.parametrize(("change", "message"), [
    ("ALTER TABLE models DROP COLUMN memory_mb", "table models lacks memory_mb. Move it aside"),
    ("DROP TABLE datasets", "has no table datasets. Move it aside"),
])
def test_a_store_older_than_the_initial_revision_is_refused_with_the_fix(
        store_url: str, change: str, message: str) -> None:
    make_pre_migration_store(store_url)
    run_sql(store_url, change)
    with pytest.raises(SchemaError, match=message):
        st.Store(store_url)
    engine = create_engine(store_url)
    assert "alembic_version" not in inspect(engine).get_table_names()  # left as it was
    engine.dispose()


def test_a_store_from_a_newer_version_is_refused_and_left_alone(store_url: str) -> None:
    st.Store(store_url).close()
    run_sql(store_url, "UPDATE alembic_version SET version_num = '0099_future'")
    with pytest.raises(SchemaError, match=(
            r"made by a newer slmfleet \(schema revision 0099_future; this version knows up "
            rf"to {head_revision()}\)\. Upgrade slmfleet")):
        st.Store(store_url)
    assert revision_of(store_url) == ["0099_future"]


# --- URLs and servers -----------------------------------------------------------------


def test_postgresql_urls_use_psycopg_3() -> None:
    for url in ("postgresql://u:p@db.lab:5432/fleet", "postgresql+psycopg://u:p@h/d"):
        assert parse_store_url(url).drivername == "postgresql+psycopg"
    assert parse_store_url("sqlite:///x/s.db").drivername == "sqlite"


@pytest.mark.parametrize(("url", "message"), [
    ("not a url", "not a URL that slmfleet understands; use sqlite:///PATH"),
    (f"mysql+pymysql://fleet:{SECRET}@db/fleet", "names 'mysql\\+pymysql', which slmfleet "
                                                 "does not support; use sqlite:///PATH"),
    (f"postgres://fleet:{SECRET}@db/fleet", "names 'postgres'.*postgresql\\+psycopg://"),
])
def test_a_bad_database_url_is_refused_with_the_forms_that_work(url: str, message: str) -> None:
    with pytest.raises(StoreError, match=message) as caught:
        st.Store(url)
    assert SECRET not in str(caught.value)


def test_an_unreachable_postgresql_server_is_a_clear_error_without_the_password() -> None:
    with pytest.raises(StoreError, match=r"cannot connect to the store at "
                       r"postgresql\+psycopg://slmfleet:\*\*\*@127.0.0.1:1/slmfleet \(.*"
                       "make postgres") as caught:
        st.Store(UNREACHABLE)
    assert SECRET not in str(caught.value)


def test_a_wrong_password_or_database_is_a_clear_error() -> None:
    server = require_server()
    with pytest.raises(StoreError, match="authentication failed.*check the user and password"):
        st.Store(server.set(password="not-the-password").render_as_string(hide_password=False))
    with pytest.raises(StoreError, match="does not exist.*createdb"):
        st.Store(server.set(database="no_such_db").render_as_string(hide_password=False))


def test_a_sqlite_store_that_cannot_be_created_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    with pytest.raises(StoreError, match="cannot create .*a-file for the store"):
        st.Store(f"sqlite:///{tmp_path}/a-file/s.db")


# --- the coordinator command ----------------------------------------------------------


def newer_store(data_dir: Path) -> str:
    url = f"sqlite:///{data_dir}/slmfleet.db"
    st.Store(url).close()
    run_sql(url, "UPDATE alembic_version SET version_num = '0099_future'")
    return url


@pytest.mark.parametrize(("url", "message"), [
    ("not a url", "error: the database URL is not a URL"),
    (UNREACHABLE, "error: cannot connect to the store at postgresql+psycopg://slmfleet:***@"),
    ("newer", "error: the store at sqlite:///"),
])
def test_the_coordinator_refuses_a_store_it_cannot_use_in_one_line_with_exit_2(
        tmp_path: Path, url: str, message: str) -> None:
    data_dir = tmp_path / "coordinator"
    if url == "newer":
        url = newer_store(data_dir)
    result = CliRunner().invoke(app, ["coordinator", "--data-dir", str(data_dir),
                                      "--database-url", url, "--api-port", "1"])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), result.stderr
    assert SECRET not in result.output and "Traceback" not in result.output
    assert not (data_dir / "join_token").exists()  # refused before anything was made


def test_the_coordinator_takes_the_database_url_from_the_environment(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["coordinator", "--data-dir", str(tmp_path)],
                                env={"SLMFLEET_DATABASE_URL": UNREACHABLE})
    assert result.exit_code == 2 and "127.0.0.1:1/slmfleet" in result.stderr
    assert SECRET not in result.output
