"""The SQL schema of the coordinator's store: nodes, models, jobs and their work items.

One `WorkItemRow` per (job, model, task, dataset item, repeat) holds the rendered prompt,
its lease while a node works on it, and — once done — the prediction, its score and
the node's measurements, so a result is one row. SQLite (WAL) is the embedded default;
PostgreSQL (through psycopg 3) is the store for shared deployments. The Alembic migrations
in `coordinator/migrations/` create and upgrade these tables (`coordinator.migrate`), and a
test checks that they build exactly this schema.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    create_engine,
    event,
    false,
)
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from coordinator.errors import StoreError
from coordinator.migrate import describe_db_error, upgrade_store


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


# Names and keys are bounded by the API that takes them, not by their column: SQLite never
# enforced VARCHAR lengths, so on PostgreSQL they are TEXT, which keeps that behaviour (a
# judge job's item keys, say, join a model name and an item id).
Name = String(128).with_variant(Text(), "postgresql")
# A model file passes 2 GiB: INTEGER is 64-bit on SQLite but 32-bit on PostgreSQL.
ByteSize = Integer().with_variant(BigInteger(), "postgresql")


class FreeText(TypeDecorator[str]):
    """Text from models, agents and datasets. PostgreSQL's text cannot hold NUL, so there
    a NUL is stored as U+FFFD; SQLite stores the text as it is."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        if value is not None and dialect.name == "postgresql" and "\x00" in value:
            return value.replace("\x00", "\ufffd")
        return value


class NodeRow(Base):
    __tablename__ = "nodes"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(Name, unique=True)
    facts: Mapped[dict[str, Any]] = mapped_column(JSON)
    runtime: Mapped[str] = mapped_column(String(16))
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    workers: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, nullable=True)
    errors: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)  # node-level problems
    public_key: Mapped[str | None] = mapped_column(String(40), nullable=True)  # CURVE, pinned
    revoked_key: Mapped[str | None] = mapped_column(String(40), nullable=True)
    registered_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    last_seen: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    left: Mapped[bool] = mapped_column(default=False)
    draining: Mapped[bool] = mapped_column(default=False, server_default=false())  # no new leases


class ModelRow(Base):
    __tablename__ = "models"
    name: Mapped[str] = mapped_column(Name, primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    size: Mapped[int] = mapped_column(ByteSize)
    path: Mapped[str] = mapped_column(Text)
    threads: Mapped[int] = mapped_column(Integer, default=2)
    n_ctx: Mapped[int] = mapped_column(Integer, default=2048)
    cpus: Mapped[float | None] = mapped_column(Float, nullable=True)  # worker container limits
    memory_mb: Mapped[int | None] = mapped_column(Integer, nullable=True)
    chat_template: Mapped[dict[str, str] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class DatasetRow(Base):
    """A user dataset, stored whole: the bytes a job's results name by sha256."""

    __tablename__ = "datasets"
    name: Mapped[str] = mapped_column(Name, primary_key=True)
    task: Mapped[str] = mapped_column(String(32))
    sha256: Mapped[str] = mapped_column(String(64))
    format: Mapped[str] = mapped_column(String(8), default="jsonl")  # jsonl, csv or text
    content: Mapped[bytes] = mapped_column(LargeBinary)
    documents: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    labels: Mapped[dict[str, str] | None] = mapped_column(JSON, nullable=True)
    items: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class JobRow(Base):
    __tablename__ = "jobs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(Name)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(16), default="running")
    total: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class WorkItemRow(Base):
    __tablename__ = "work_items"
    __table_args__ = (
        UniqueConstraint("job_id", "model", "task", "dataset", "item_key", "repeat"),
        Index("ix_work_items_queue", "job_id", "model", "status"),
        Index("ix_work_items_open", "job_id", "status"),
        Index("ix_work_items_lease", "job_id", "model", "status", "lease_rank", "id"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"))
    model: Mapped[str] = mapped_column(Name)
    task: Mapped[str] = mapped_column(String(32))
    dataset: Mapped[str] = mapped_column(Name)
    item_key: Mapped[str] = mapped_column(Name)
    repeat: Mapped[int] = mapped_column(Integer, default=0)
    prompt: Mapped[str] = mapped_column(FreeText)
    reference: Mapped[dict[str, Any]] = mapped_column(JSON)
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    lease_node: Mapped[int | None] = mapped_column(Integer, nullable=True)
    lease_deadline: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    # a second copy near the job's end (a backup task): the first result wins
    backup_lease_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    backup_node: Mapped[int | None] = mapped_column(Integer, nullable=True)
    backup_deadline: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    # leased in ascending rank, then id: minus its size hint (the largest first), so the
    # lease index is read in order, never sorted
    lease_rank: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    node_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    output: Mapped[str | None] = mapped_column(FreeText, nullable=True)
    prediction: Mapped[str | None] = mapped_column(FreeText, nullable=True)
    score: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    error: Mapped[str | None] = mapped_column(FreeText, nullable=True)
    ttft_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    tpot_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    e2e_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    prompt_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    completion_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    tokens_per_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    peak_rss_mb: Mapped[float | None] = mapped_column(Float, nullable=True)
    cpu_temp_c: Mapped[float | None] = mapped_column(Float, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


SUPPORTED_URLS = ("sqlite:///PATH (the default: <data-dir>/slmfleet.db) or "
                  "postgresql+psycopg://USER:PASSWORD@HOST:PORT/DATABASE")
CONNECT_TIMEOUT_S = 10


def parse_store_url(url: str) -> URL:
    """Parse a store URL: SQLite, or PostgreSQL through psycopg 3 (`postgresql://` means
    that driver too). Anything else is a `StoreError` naming the forms that work."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):  # never echo it: it may hold a password
        raise StoreError(f"the database URL is not a URL that slmfleet understands; use "
                         f"{SUPPORTED_URLS}") from None
    if parsed.drivername in ("postgresql", "postgresql+psycopg"):
        return parsed.set(drivername="postgresql+psycopg")
    if parsed.drivername in ("sqlite", "sqlite+pysqlite"):
        return parsed
    raise StoreError(f"the database URL {shown(parsed)} names '{parsed.drivername}', which "
                     f"slmfleet does not support; use {SUPPORTED_URLS}")


def shown(url: URL) -> str:
    """The URL as it may be printed: the password hidden."""
    return url.render_as_string(hide_password=True)


def make_engine(url: str) -> Engine:
    """An engine for the store at `url`, its schema upgraded to this version's.

    SQLite files get WAL mode, a busy timeout and atomic transactions: pysqlite on its own
    runs a transaction's first SELECT outside any transaction and begins one only at the
    first write, so a read-modify-write (lease an item, cancel a job, record a result)
    could interleave with another thread's. Every transaction here starts with BEGIN
    IMMEDIATE instead (SQLAlchemy's documented recipe), which makes each one atomic against
    the others. PostgreSQL runs at READ COMMITTED; the store locks the rows it changes
    (`coordinator.store`). A bad URL or a server that cannot be reached is a `StoreError`,
    a store of another slmfleet version a `SchemaError` (`coordinator.migrate`).
    """
    parsed = parse_store_url(url)
    engine = _sqlite_engine(parsed) if parsed.get_backend_name() == "sqlite" else (
        _postgresql_engine(parsed))
    try:
        _check_reachable(engine)
        upgrade_store(engine)
    except BaseException:
        engine.dispose()
        raise
    return engine


def json_dumps(value: Any) -> str:
    """JSON for the store's JSON columns; NaN and infinities (which PostgreSQL's json
    refuses and JSON has no word for) are stored as null on every backend."""
    try:
        return json.dumps(value, allow_nan=False)
    except ValueError:
        return json.dumps(_finite(value), allow_nan=False)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


READ_ONLY = "slmfleet_read_only"  # an execution option: the transaction only reads


def _sqlite_engine(url: URL) -> Engine:
    if url.database and url.database != ":memory:":
        folder = Path(url.database).parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create {folder} for the store: {exc.strerror}; pass "
                             "another --data-dir (or --database-url)") from None
    engine = create_engine(url, connect_args={"timeout": 30}, json_serializer=json_dumps)

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # transactions are begun below, not by pysqlite
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        # a writer takes the write lock first (a read upgraded to a write could fail at
        # once on a busy store); a reader reads a WAL snapshot and blocks no one (with the
        # lock, one big read, a report say, stalled the hub's every write)
        read_only = connection.get_execution_options().get(READ_ONLY, False)
        connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

    return engine


def _postgresql_engine(url: URL) -> Engine:
    connect_args = {} if "connect_timeout" in url.query else {
        "connect_timeout": CONNECT_TIMEOUT_S}
    try:
        return create_engine(url, connect_args=connect_args, pool_pre_ping=True,
                             json_serializer=json_dumps)
    except ImportError as exc:
        raise StoreError(f"cannot use PostgreSQL: its driver did not load ({exc}); "
                         "reinstall slmfleet, or pip install 'psycopg[binary]'") from None


def _check_reachable(engine: Engine) -> None:
    """Connect once, so that a wrong address, password or path is one clear error."""
    url = shown(engine.url)
    try:
        with engine.connect() as connection:
            encoding = connection.exec_driver_sql("SHOW server_encoding").scalar() if (
                engine.dialect.name == "postgresql") else "UTF8"
            connection.rollback()
    except DBAPIError as exc:
        reason = describe_db_error(exc)
        if engine.dialect.name != "postgresql":
            raise StoreError(f"cannot open the store at {url} ({reason}); check the path and "
                             "its permissions, or pass another --data-dir") from None
        if "does not exist" in reason:
            fix = "create it (createdb -E UTF8 -T template0 -O USER DATABASE), or fix the URL"
        elif "authentication failed" in reason:
            fix = "check the user and password in the URL"
        else:
            fix = ("check that the PostgreSQL server runs and accepts TCP connections at that "
                   "host and port (for a local test server: make postgres)")
        raise StoreError(f"cannot connect to the store at {url} ({reason}); {fix}") from None
    if encoding != "UTF8":
        raise StoreError(f"the database of the store at {url} uses the {encoding} encoding; "
                         "slmfleet needs UTF8: create it with createdb -E UTF8 -T template0 "
                         "-O USER DATABASE")
