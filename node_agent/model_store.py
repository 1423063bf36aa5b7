"""The node's model store: GGUF files kept by sha256 in the agent's own cache directory.

Files arrive in chunks written at their offsets into `<sha>.part`; a download resumes
from the part file's size; a finished file is verified against its sha256 before it is
renamed into place, so a model in the store is always whole and correct.

With a size limit the store is an LRU cache: before a download it evicts the models used
least recently (a file's mtime is its last use) that no worker wants now, and it refuses
the download, saying by how much, when even that would not make room.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Collection
from pathlib import Path

from node_agent.errors import ModelStoreError

GGUF_MAGIC = b"GGUF"


def sha256_file(path: Path, *, block: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while data := handle.read(block):
            digest.update(data)
    return digest.hexdigest()


class ModelStore:
    """A directory of verified model files named by their sha256."""

    def __init__(self, root: Path, *, limit_bytes: int | None = None) -> None:
        self.root = root
        self.limit_bytes = limit_bytes
        self.root.mkdir(parents=True, exist_ok=True)

    def used_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.root.iterdir()
                   if f.suffix in (".gguf", ".part"))

    def touch(self, sha256: str) -> None:
        """Mark a stored model as just used (for LRU eviction)."""
        if self.has(sha256):
            self.path(sha256).touch()

    def make_room(self, sha256: str, *, size: int, keep: Collection[str]) -> list[str]:
        """Evict least recently used models outside `keep` until `sha256` (of `size` bytes,
        part of which may be on disk already) fits under the limit; returns the evicted.

        Raises ModelStoreError, and evicts nothing, when it cannot fit.
        """
        if self.limit_bytes is None:
            return []
        needed = size - self.received(sha256)
        used = self.used_bytes()
        if used + needed <= self.limit_bytes:
            return []
        candidates = sorted((f for f in self.root.glob("*.gguf")
                             if f.stem not in keep and f.stem != sha256),
                            key=lambda f: f.stat().st_mtime)
        freeable = sum(f.stat().st_size for f in candidates)
        if used - freeable + needed > self.limit_bytes:
            raise ModelStoreError(
                f"model {sha256[:12]} ({size / 2**20:.0f} MiB) does not fit the model cache "
                f"limit of {self.limit_bytes / 2**20:.0f} MiB: the models in use take "
                f"{(used - freeable) / 2**20:.0f} MiB; raise --cache-limit-mb or remove a "
                "model")
        evicted = []
        for victim in candidates:
            if used + needed <= self.limit_bytes:
                break
            used -= victim.stat().st_size
            victim.unlink()
            evicted.append(victim.stem)
        return evicted

    def path(self, sha256: str) -> Path:
        return self.root / f"{sha256}.gguf"

    def _part(self, sha256: str) -> Path:
        return self.root / f"{sha256}.part"

    def has(self, sha256: str) -> bool:
        return self.path(sha256).exists()

    def received(self, sha256: str) -> int:
        """Bytes of `sha256` already on disk: where a download resumes."""
        if self.has(sha256):
            return self.path(sha256).stat().st_size
        part = self._part(sha256)
        return part.stat().st_size if part.exists() else 0

    def read_range(self, sha256: str, *, offset: int, length: int) -> bytes | None:
        """`length` bytes of `sha256` from `offset`, from the stored file or from the part
        still arriving; None when this node does not hold them (yet)."""
        for path in (self.path(sha256), self._part(sha256), self.path(sha256)):
            try:  # the part file may be renamed into place between the tries
                with path.open("rb") as handle:
                    handle.seek(offset)
                    data = handle.read(length)
            except FileNotFoundError:
                continue
            if len(data) == length:
                return data
        return None

    def write_chunk(self, sha256: str, *, offset: int, data: bytes, total_size: int) -> int:
        """Write one chunk; return the contiguous bytes now held. Out-of-order chunks fail."""
        held = self.received(sha256)
        if offset != held:
            raise ModelStoreError(f"chunk at offset {offset} for {sha256[:12]} does not "
                                  f"continue the {held} bytes held")
        if offset + len(data) > total_size:
            raise ModelStoreError(f"chunk for {sha256[:12]} runs past the file size {total_size}")
        try:
            with self._part(sha256).open("ab") as handle:
                handle.write(data)
        except OSError as exc:
            raise ModelStoreError(f"cannot write model {sha256[:12]} into {self.root}: "
                                  f"{exc.strerror}; free disk space or move the cache") from exc
        return offset + len(data)

    def finish(self, sha256: str) -> Path:
        """Verify the completed part file and move it into place."""
        part = self._part(sha256)
        actual = sha256_file(part)
        if actual != sha256:
            part.unlink(missing_ok=True)
            raise ModelStoreError(f"model download is corrupt: sha256 {actual[:12]} != "
                                  f"expected {sha256[:12]}; it was discarded and will be "
                                  "fetched again")
        with part.open("rb") as handle:
            if handle.read(4) != GGUF_MAGIC:
                part.unlink(missing_ok=True)
                raise ModelStoreError(f"model {sha256[:12]} is not a GGUF file")
        os.replace(part, self.path(sha256))
        return self.path(sha256)
