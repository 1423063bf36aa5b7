"""Worker specs for tests that start workers directly, without a coordinator."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from node_agent.model_store import sha256_file
from node_agent.protocol import WorkerSpec


def worker_spec(model: str, path: Path, **settings: Any) -> WorkerSpec:
    """A spec for the GGUF file at `path` (threads 1, n_ctx 512 unless given)."""
    values: dict[str, Any] = {"threads": 1, "n_ctx": 512, **settings}
    return WorkerSpec(model=model, sha256=sha256_file(path), size=path.stat().st_size,
                      **values)
