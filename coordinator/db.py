"""The SQL schema of the coordinator's store: nodes, models, jobs and their work items.

One `WorkItemRow` per (job, model, task, dataset item, repeat) holds the rendered prompt,
its lease while a node works on it, and — once done — the prediction, its score and
the node's measurements, so a result is one row. SQLite (WAL) is the embedded default.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    inspect,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from coordinator.errors import SchemaError


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class NodeRow(Base):
    __tablename__ = "nodes"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
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


class ModelRow(Base):
    __tablename__ = "models"
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    size: Mapped[int] = mapped_column(Integer)
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
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
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
    name: Mapped[str] = mapped_column(String(128))
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
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"))
    model: Mapped[str] = mapped_column(String(128))
    task: Mapped[str] = mapped_column(String(32))
    dataset: Mapped[str] = mapped_column(String(128))
    item_key: Mapped[str] = mapped_column(String(128))
    repeat: Mapped[int] = mapped_column(Integer, default=0)
    prompt: Mapped[str] = mapped_column(Text)
    reference: Mapped[dict[str, Any]] = mapped_column(JSON)
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    lease_node: Mapped[int | None] = mapped_column(Integer, nullable=True)
    lease_deadline: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    node_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    output: Mapped[str | None] = mapped_column(Text, nullable=True)
    prediction: Mapped[str | None] = mapped_column(Text, nullable=True)
    score: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    ttft_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    tpot_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    e2e_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    prompt_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    completion_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    tokens_per_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    peak_rss_mb: Mapped[float | None] = mapped_column(Float, nullable=True)
    cpu_temp_c: Mapped[float | None] = mapped_column(Float, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


def make_engine(url: str) -> Engine:
    """An engine for `url`; SQLite files get WAL mode, a busy timeout and atomic transactions.

    pysqlite on its own runs a transaction's first SELECT outside any transaction and
    begins one only at the first write, so a read-modify-write (lease an item, cancel a
    job, record a result) could interleave with another thread's. Every transaction here
    starts with BEGIN IMMEDIATE instead (SQLAlchemy's documented recipe), which makes each
    one atomic against the others.
    """
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": 30} if url.startswith("sqlite") else {})
    if url.startswith("sqlite"):
        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None  # transactions are begun below, not by pysqlite
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _begin_immediate(connection: Any) -> None:
            connection.exec_driver_sql("BEGIN IMMEDIATE")
    Base.metadata.create_all(engine)
    check_schema(engine)
    return engine


def check_schema(engine: Engine) -> None:
    """Refuse, with the fix, a store whose tables lack columns of this version's schema.

    `create_all` creates missing tables but never alters existing ones, so an older
    store would otherwise fail later, on the first query that touches a new column.
    """
    inspector = inspect(engine)
    for table in Base.metadata.sorted_tables:
        present = {c["name"] for c in inspector.get_columns(table.name)}
        missing = [c.name for c in table.columns if c.name not in present]
        if missing:
            raise SchemaError(
                f"the store at {engine.url.render_as_string(hide_password=True)} was made by "
                f"an older slmfleet: table {table.name} lacks {', '.join(missing)}. Move it "
                "aside (or use a new --data-dir) and start again; results in it stay "
                "readable with the older version")
