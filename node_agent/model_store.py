"""The node's model store: GGUF files kept by sha256 in the agent's own cache directory.

Files arrive in chunks, in any order, written at their offsets into `<sha>.part`; each
chunk's range is then appended to `<sha>.held` (16 bytes: offset, length), so a
download resumes with the ranges still missing, also after a restart, and the node can
serve its peers any range it holds. A finished file is verified against its sha256
before it is renamed into place, so a model in the store is always whole and correct.

With a size limit the store is an LRU cache: before a download it evicts the models used
least recently (a file's mtime is its last use) that no worker wants now, and it refuses
the download, saying by how much, when even that would not make room.
"""

from __future__ import annotations

import bisect
import hashlib
import os
import struct
from collections.abc import Collection
from pathlib import Path

from node_agent.errors import ModelStoreError

GGUF_MAGIC = b"GGUF"
_RANGE = struct.Struct("<QQ")  # a held range in the .held log: offset, length


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
        self._held: dict[str, list[tuple[int, int]]] = {}  # merged [start, end) ranges
        self._verified: set[str] = set()  # files checked against their sha256 in this run

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

    def _log(self, sha256: str) -> Path:
        return self.root / f"{sha256}.held"

    def has(self, sha256: str) -> bool:
        return self.path(sha256).exists()

    def verify(self, sha256: str) -> bool:
        """Check a stored file against its sha256, once per run (an SD card may have
        corrupted it since it was written); a corrupt file is deleted: False."""
        if sha256 in self._verified:
            return True
        path = self.path(sha256)
        try:
            intact = sha256_file(path) == sha256
        except FileNotFoundError:
            return False
        if not intact:
            path.unlink(missing_ok=True)
            return False
        self._verified.add(sha256)
        return True

    def _ranges(self, sha256: str) -> list[tuple[int, int]]:
        """The merged ranges of a part file, read from its log on first use."""
        if sha256 not in self._held:
            ranges: list[tuple[int, int]] = []
            log, part = self._log(sha256), self._part(sha256)
            if log.exists():
                raw = log.read_bytes()
                for at in range(0, len(raw) - len(raw) % _RANGE.size, _RANGE.size):
                    offset, length = _RANGE.unpack_from(raw, at)
                    ranges = _merge(ranges, offset, offset + length)
            elif part.exists() and part.stat().st_size:  # written in order, before the log
                ranges = [(0, part.stat().st_size)]
            self._held[sha256] = ranges
        return self._held[sha256]

    def received(self, sha256: str) -> int:
        """Bytes of `sha256` on disk (held ranges of a part file, or the whole file)."""
        if self.has(sha256):
            return self.path(sha256).stat().st_size
        return sum(end - start for start, end in self._ranges(sha256))

    def holds(self, sha256: str, *, offset: int, length: int) -> bool:
        """Whether this node holds `length` bytes of `sha256` from `offset`."""
        if self.has(sha256):
            return offset + length <= self.path(sha256).stat().st_size
        ranges = self._ranges(sha256)
        at = bisect.bisect_right(ranges, offset, key=lambda r: r[0]) - 1
        return at >= 0 and ranges[at][0] <= offset and offset + length <= ranges[at][1]

    def read_range(self, sha256: str, *, offset: int, length: int) -> bytes | None:
        """`length` bytes of `sha256` from `offset`, from the stored file or from the part
        still arriving; None when this node does not hold them (yet)."""
        for path in (self.path(sha256), self._part(sha256), self.path(sha256)):
            if path.suffix == ".part" and not self.holds(sha256, offset=offset, length=length):
                continue
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
        """Write one chunk at its offset (in any order); return the bytes now held."""
        if offset + len(data) > total_size:
            raise ModelStoreError(f"chunk for {sha256[:12]} runs past the file size {total_size}")
        ranges = self._ranges(sha256)
        part = self._part(sha256)
        try:
            if not self._log(sha256).exists() and ranges:  # an in-order part of before
                self._log(sha256).write_bytes(_RANGE.pack(0, ranges[0][1]))
            with part.open("r+b" if part.exists() else "wb") as handle:
                handle.seek(offset)
                handle.write(data)
            with self._log(sha256).open("ab") as log:
                log.write(_RANGE.pack(offset, len(data)))
        except OSError as exc:
            raise ModelStoreError(f"cannot write model {sha256[:12]} into {self.root}: "
                                  f"{exc.strerror}; free disk space or move the cache") from exc
        self._held[sha256] = _merge(ranges, offset, offset + len(data))
        return self.received(sha256)

    def discard(self, sha256: str) -> None:
        """Drop a part file and its log."""
        self._part(sha256).unlink(missing_ok=True)
        self._log(sha256).unlink(missing_ok=True)
        self._held.pop(sha256, None)

    def finish(self, sha256: str) -> Path:
        """Verify the completed part file and move it into place."""
        part = self._part(sha256)
        actual = sha256_file(part)
        if actual != sha256:
            self.discard(sha256)
            raise ModelStoreError(f"model download is corrupt: sha256 {actual[:12]} != "
                                  f"expected {sha256[:12]}; it was discarded and will be "
                                  "fetched again")
        with part.open("rb") as handle:
            if handle.read(4) != GGUF_MAGIC:
                self.discard(sha256)
                raise ModelStoreError(f"model {sha256[:12]} is not a GGUF file")
        os.replace(part, self.path(sha256))
        self._log(sha256).unlink(missing_ok=True)
        self._held.pop(sha256, None)
        self._verified.add(sha256)
        return self.path(sha256)


def _merge(ranges: list[tuple[int, int]], start: int, end: int) -> list[tuple[int, int]]:
    """`ranges` (sorted, disjoint, not touching) with [start, end) added."""
    merged: list[tuple[int, int]] = []
    for low, high in ranges:
        if high < start or low > end:
            merged.append((low, high))
        else:
            start, end = min(start, low), max(end, high)
    merged.append((start, end))
    return sorted(merged)
