"""Hardware facts and health metrics of the machine a node agent runs on.

``hardware_facts()`` describes what a node *is* (reported once, at registration);
``node_metrics()`` samples how it is *doing* (reported with every heartbeat).
Every file reader takes ``root`` so tests can point it at a fake tree; on a real
node ``root`` is ``/``. Nothing here raises on missing files or tools: a value
that cannot be read is ``None`` (or a documented fallback).

Units: ``ram_mb`` and ``mem_available_mb`` are MiB, ``disk_*_gb`` are GiB.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import re
import shutil
import socket
import subprocess
from pathlib import Path

import psutil
from pydantic import BaseModel, ConfigDict

_MIB = 1024**2
_GIB = 1024**3
_PREFERRED_ZONE_TYPES = ("cpu-thermal", "cpu_thermal", "x86_pkg_temp")
_PREFERRED_SENSORS = ("cpu_thermal", "cpu-thermal", "coretemp", "k10temp", "zenpower")
_THROTTLED_RE = re.compile(r"\s*throttled=0x([0-9a-fA-F]+)\s*")
# Bit meanings of `vcgencmd get_throttled`, per the Raspberry Pi documentation.
THROTTLED_BITS: dict[int, str] = {
    0: "under-voltage now",
    1: "arm frequency capped now",
    2: "throttled now",
    3: "soft temperature limit now",
    16: "under-voltage occurred",
    17: "arm frequency capped occurred",
    18: "throttling occurred",
    19: "soft temperature limit occurred",
}


class HardwareFacts(BaseModel):
    """Static description of a node, sent once when the agent registers."""

    model_config = ConfigDict(frozen=True, strict=True, extra="forbid")

    hostname: str
    pi_model: str | None
    cpu_model: str
    cores: int
    ram_mb: int
    disk_total_gb: float
    arch: str
    os: str
    python: str
    llama_cpp_version: str | None


class NodeMetrics(BaseModel):
    """One health sample of a node; ``throttled`` is the raw vcgencmd bitmask."""

    model_config = ConfigDict(frozen=True, strict=True, extra="forbid")

    cpu_percent: float
    load1: float
    mem_used_percent: float
    mem_available_mb: int
    disk_free_gb: float
    cpu_temp_c: float | None
    throttled: int | None


def _read_text(path: Path) -> str | None:
    """File contents as text, or None when it is absent or unreadable."""
    try:
        return path.read_bytes().decode("utf-8", errors="replace")
    except OSError:
        return None


def read_pi_model(root: Path = Path("/")) -> str | None:
    """Board model from the device tree (NUL-terminated on a Pi); None when absent."""
    for rel in ("proc/device-tree/model", "sys/firmware/devicetree/base/model"):
        text = _read_text(root / rel)
        if text is not None:
            model = text.split("\x00", 1)[0].strip()
            if model:
                return model
    return None


def read_cpu_model(root: Path = Path("/")) -> str:
    """CPU description from /proc/cpuinfo: "model name", else "Model"/"Hardware" (ARM).

    arm64 kernels print no "model name"; on Raspberry Pi OS the "Model" line is the
    board name. Falls back to platform.processor(), then platform.machine().
    """
    fields: dict[str, str] = {}
    for line in (_read_text(root / "proc/cpuinfo") or "").splitlines():
        key, sep, value = line.partition(":")
        if sep and value.strip():
            fields.setdefault(key.strip(), value.strip())
    for key in ("model name", "Model", "Hardware"):
        if key in fields:
            return fields[key]
    return platform.processor() or platform.machine() or "unknown"


def _zone_temp_c(zone: Path) -> float | None:
    text = _read_text(zone / "temp")
    try:
        celsius = int((text or "").strip()) / 1000.0
    except ValueError:
        return None
    return celsius if -40.0 <= celsius <= 150.0 else None  # drop sentinel/bogus values


def _zone_index(zone: Path) -> int:
    digits = zone.name.removeprefix("thermal_zone")
    return int(digits) if digits.isdigit() else 1 << 30


def _psutil_temp_c() -> float | None:
    sensors_fn = getattr(psutil, "sensors_temperatures", None)
    if sensors_fn is None:
        return None
    try:
        sensors = sensors_fn()
    except (OSError, RuntimeError, ValueError):
        return None
    names = [n for n in _PREFERRED_SENSORS if n in sensors]
    names += [n for n in sensors if n not in names]
    for name in names:
        for entry in sensors[name]:
            if entry.current is not None:
                return float(entry.current)
    return None


def read_cpu_temp_c(root: Path = Path("/")) -> float | None:
    """CPU temperature in °C from /sys/class/thermal (millidegrees); None when absent.

    Zones typed cpu-thermal (Pi) or x86_pkg_temp are preferred, then any zone.
    psutil.sensors_temperatures() is only consulted when ``root`` is the real ``/``,
    so a fake tree in a test never picks up the host's sensors.
    """
    zones = sorted((root / "sys/class/thermal").glob("thermal_zone*"), key=_zone_index)
    readings = [((_read_text(z / "type") or "").strip(), _zone_temp_c(z)) for z in zones]
    valid = [(kind, temp) for kind, temp in readings if temp is not None]
    for kind, temp in valid:
        if kind in _PREFERRED_ZONE_TYPES:
            return temp
    if valid:
        return valid[0][1]
    return _psutil_temp_c() if root == Path("/") else None


def parse_throttled(text: str) -> int | None:
    """Parse ``vcgencmd get_throttled`` output ("throttled=0x50005") into an int."""
    match = _THROTTLED_RE.fullmatch(text)
    return int(match.group(1), 16) if match else None


def describe_throttled(mask: int) -> list[str]:
    """Human-readable meanings of the set bits, lowest bit first."""
    found = [label for bit, label in THROTTLED_BITS.items() if mask & (1 << bit)]
    unknown = mask & ~sum(1 << bit for bit in THROTTLED_BITS)
    found += [f"unknown bit {b}" for b in range(unknown.bit_length()) if unknown >> b & 1]
    return found


def read_throttled(*, timeout_s: float = 2.0) -> int | None:
    """Run ``vcgencmd get_throttled`` if it is on PATH; None otherwise. Never raises."""
    exe = shutil.which("vcgencmd")
    if exe is None:
        return None
    try:
        done = subprocess.run(
            [exe, "get_throttled"],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    return parse_throttled(done.stdout) if done.returncode == 0 else None


def _existing_dir(path: Path | None) -> Path:
    """The path itself, or its nearest existing ancestor (model dirs may not exist yet)."""
    candidate = (path or Path("/")).absolute()
    while not candidate.exists() and candidate != candidate.parent:
        candidate = candidate.parent
    return candidate


def _read_os_name(root: Path) -> str:
    """PRETTY_NAME from os-release (e.g. "Debian GNU/Linux 12 (bookworm)"), else platform."""
    for rel in ("etc/os-release", "usr/lib/os-release"):
        for line in (_read_text(root / rel) or "").splitlines():
            key, sep, value = line.partition("=")
            if sep and key.strip() == "PRETTY_NAME" and value.strip().strip("\"'"):
                return value.strip().strip("\"'")
    return f"{platform.system()} {platform.release()}".strip() or "unknown"


def _llama_cpp_version() -> str | None:
    try:
        return importlib.metadata.version("llama-cpp-python")
    except importlib.metadata.PackageNotFoundError:
        return None


def hardware_facts(*, model_dir: Path | None = None, root: Path = Path("/")) -> HardwareFacts:
    """Describe this machine; ``disk_total_gb`` is of the filesystem holding ``model_dir``."""
    return HardwareFacts(
        hostname=socket.gethostname(),
        pi_model=read_pi_model(root),
        cpu_model=read_cpu_model(root),
        cores=psutil.cpu_count(logical=True) or os.cpu_count() or 1,
        ram_mb=psutil.virtual_memory().total // _MIB,
        disk_total_gb=round(psutil.disk_usage(str(_existing_dir(model_dir))).total / _GIB, 2),
        arch=platform.machine() or "unknown",
        os=_read_os_name(root),
        python=platform.python_version(),
        llama_cpp_version=_llama_cpp_version(),
    )


def node_metrics(*, model_dir: Path | None = None, root: Path = Path("/")) -> NodeMetrics:
    """Sample current health.

    ``cpu_percent`` uses ``interval=None``: it covers the time since the previous call
    in this process, so the very first sample is 0.0 and carries no information.
    """
    memory = psutil.virtual_memory()
    return NodeMetrics(
        cpu_percent=psutil.cpu_percent(interval=None),
        load1=os.getloadavg()[0],
        mem_used_percent=memory.percent,
        mem_available_mb=memory.available // _MIB,
        disk_free_gb=round(psutil.disk_usage(str(_existing_dir(model_dir))).free / _GIB, 2),
        cpu_temp_c=read_cpu_temp_c(root),
        throttled=read_throttled(),
    )
