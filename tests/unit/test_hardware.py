"""Tests of node_agent.hardware: parsers on Pi-format fixtures, and real readings here.

The Pi fixtures in captured/ are reproductions of the real formats (see its
README); this machine has no Pi hardware, so Pi-specific reading is tested on a
fake root tree built from them.
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest
from pydantic import ValidationError

from node_agent import hardware
from node_agent.hardware import (
    HardwareFacts,
    NodeMetrics,
    describe_throttled,
    hardware_facts,
    node_metrics,
    parse_throttled,
    read_cpu_model,
    read_cpu_temp_c,
    read_pi_model,
    read_throttled,
)

CAPTURED = Path(__file__).parent / "captured"
PI5_MODEL = "Raspberry Pi 5 Model B Rev 1.0"


def _put(root: Path, rel: str, source: str | bytes) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    data = (CAPTURED / source).read_bytes() if isinstance(source, str) else source
    path.write_bytes(data)


@pytest.fixture
def pi5_root(tmp_path: Path) -> Path:
    """A fake filesystem root laid out like a Raspberry Pi 5."""
    root = tmp_path / "pi5"
    _put(root, "proc/cpuinfo", "pi5_proc_cpuinfo.txt")
    _put(root, "proc/device-tree/model", "pi5_device_tree_model.bin")
    _put(root, "sys/class/thermal/thermal_zone0/type", "pi5_thermal_zone0_type.txt")
    _put(root, "sys/class/thermal/thermal_zone0/temp", "pi5_thermal_zone0_temp.txt")
    return root


@pytest.fixture
def empty_root(tmp_path: Path) -> Path:
    root = tmp_path / "empty"
    root.mkdir()
    return root


def _fake_vcgencmd(bin_dir: Path, body: str) -> None:
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / "vcgencmd"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


# --- fixtures are in the real formats ------------------------------------------------


def test_fixture_formats() -> None:
    assert (CAPTURED / "pi5_device_tree_model.bin").read_bytes().endswith(b"Rev 1.0\x00")
    assert b"model name" not in (CAPTURED / "pi5_proc_cpuinfo.txt").read_bytes()
    assert (CAPTURED / "pi5_thermal_zone0_temp.txt").read_bytes() == b"52650\n"


# --- file readers on the Pi 5 tree ---------------------------------------------------


def test_read_pi_model_strips_trailing_nul(pi5_root: Path) -> None:
    assert read_pi_model(pi5_root) == PI5_MODEL


def test_read_pi_model_via_sysfs_devicetree(tmp_path: Path) -> None:
    _put(tmp_path, "sys/firmware/devicetree/base/model", "pi5_device_tree_model.bin")
    assert read_pi_model(tmp_path) == PI5_MODEL


def test_read_cpu_model_arm64_uses_model_line(pi5_root: Path) -> None:
    assert read_cpu_model(pi5_root) == PI5_MODEL


def test_read_cpu_model_prefers_model_name(tmp_path: Path) -> None:
    _put(tmp_path, "proc/cpuinfo", b"processor\t: 0\nmodel name\t: AMD EPYC 7B13\n\n")
    assert read_cpu_model(tmp_path) == "AMD EPYC 7B13"


def test_read_cpu_model_hardware_line(tmp_path: Path) -> None:
    _put(tmp_path, "proc/cpuinfo", b"processor\t: 0\n\nHardware\t: BCM2835\n")
    assert read_cpu_model(tmp_path) == "BCM2835"


def test_read_cpu_temp_from_thermal_zone(pi5_root: Path) -> None:
    assert read_cpu_temp_c(pi5_root) == pytest.approx(52.65)


def test_read_cpu_temp_prefers_cpu_zone(tmp_path: Path) -> None:
    _put(tmp_path, "sys/class/thermal/thermal_zone0/type", b"acpitz\n")
    _put(tmp_path, "sys/class/thermal/thermal_zone0/temp", b"27800\n")
    _put(tmp_path, "sys/class/thermal/thermal_zone1/type", b"x86_pkg_temp\n")
    _put(tmp_path, "sys/class/thermal/thermal_zone1/temp", b"61000\n")
    assert read_cpu_temp_c(tmp_path) == pytest.approx(61.0)


def test_read_cpu_temp_skips_unreadable_zone(tmp_path: Path) -> None:
    _put(tmp_path, "sys/class/thermal/thermal_zone0/type", b"cpu-thermal\n")
    _put(tmp_path, "sys/class/thermal/thermal_zone0/temp", b"garbage\n")
    _put(tmp_path, "sys/class/thermal/thermal_zone1/type", b"gpu-thermal\n")
    _put(tmp_path, "sys/class/thermal/thermal_zone1/temp", b"48000\n")
    assert read_cpu_temp_c(tmp_path) == pytest.approx(48.0)


def test_absent_files_give_none(empty_root: Path) -> None:
    assert read_pi_model(empty_root) is None
    assert read_cpu_temp_c(empty_root) is None
    assert isinstance(read_cpu_model(empty_root), str) and read_cpu_model(empty_root)


# --- vcgencmd get_throttled -----------------------------------------------------------


@pytest.mark.parametrize(
    ("fixture", "expected"),
    [("vcgencmd_get_throttled_0x0.txt", 0), ("vcgencmd_get_throttled_0x50005.txt", 0x50005)],
)
def test_parse_throttled_fixtures(fixture: str, expected: int) -> None:
    assert parse_throttled((CAPTURED / fixture).read_text()) == expected


@pytest.mark.parametrize(
    "text", ["", "garbage", "throttled=", "throttled=0xZZ", "temp=52.0'C", "VCHI init failed"]
)
def test_parse_throttled_garbage(text: str) -> None:
    assert parse_throttled(text) is None


def test_describe_throttled_0x50005() -> None:
    assert describe_throttled(0x50005) == [
        "under-voltage now",
        "throttled now",
        "under-voltage occurred",
        "throttling occurred",
    ]


def test_describe_throttled_all_and_none() -> None:
    assert describe_throttled(0) == []
    assert len(describe_throttled(0xF000F)) == 8
    assert describe_throttled(1 << 20) == ["unknown bit 20"]


def test_read_throttled_absent_tool(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert read_throttled() is None


@pytest.mark.skipif(shutil.which("sh") is None, reason="needs /bin/sh for a fake vcgencmd")
def test_read_throttled_fake_tool(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fixture = CAPTURED / "vcgencmd_get_throttled_0x50005.txt"
    _fake_vcgencmd(tmp_path, f'[ "$1" = get_throttled ] && cat "{fixture}"')
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ.get('PATH', '')}")
    assert read_throttled() == 0x50005


@pytest.mark.skipif(shutil.which("sh") is None, reason="needs /bin/sh for a fake vcgencmd")
@pytest.mark.parametrize(
    "body", ["echo 'VCHI initialization failed' >&2; exit 255", "exec sleep 5", "echo nonsense"]
)
def test_read_throttled_failures_give_none(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, body: str
) -> None:
    _fake_vcgencmd(tmp_path, body)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ.get('PATH', '')}")
    assert read_throttled(timeout_s=0.3) is None


# --- real readings on this machine ----------------------------------------------------


def test_hardware_facts_on_this_machine(tmp_path: Path) -> None:
    facts = hardware_facts(model_dir=tmp_path)
    assert facts.cores >= 1
    assert facts.ram_mb > 0
    assert facts.disk_total_gb > 0
    assert facts.hostname and facts.cpu_model and facts.arch and facts.os and facts.python
    assert facts.llama_cpp_version is None or facts.llama_cpp_version[0].isdigit()


def test_hardware_facts_missing_model_dir_uses_existing_parent(tmp_path: Path) -> None:
    assert hardware_facts(model_dir=tmp_path / "not" / "yet").disk_total_gb > 0


def test_hardware_facts_on_pi5_tree(pi5_root: Path) -> None:
    facts = hardware_facts(root=pi5_root)
    assert facts.pi_model == PI5_MODEL
    assert facts.cpu_model == PI5_MODEL


def test_node_metrics_on_this_machine(tmp_path: Path) -> None:
    node_metrics(model_dir=tmp_path)  # primes cpu_percent(interval=None)
    metrics = node_metrics(model_dir=tmp_path)
    assert 0 <= metrics.cpu_percent <= 100
    assert metrics.load1 >= 0
    assert 0 <= metrics.mem_used_percent <= 100
    assert metrics.mem_available_mb > 0
    assert metrics.disk_free_gb >= 0
    assert metrics.cpu_temp_c is None or -40 <= metrics.cpu_temp_c <= 150
    assert metrics.throttled is None or metrics.throttled >= 0


def test_node_metrics_on_pi5_tree(pi5_root: Path) -> None:
    assert node_metrics(root=pi5_root).cpu_temp_c == pytest.approx(52.65)


# --- models ------------------------------------------------------------------------


def test_models_are_frozen(tmp_path: Path) -> None:
    facts = hardware_facts(model_dir=tmp_path)
    metrics = node_metrics(model_dir=tmp_path)
    with pytest.raises(ValidationError):
        facts.cores = 99  # type: ignore[misc]
    with pytest.raises(ValidationError):
        metrics.load1 = 1.0  # type: ignore[misc]


def test_models_reject_extra_fields(tmp_path: Path) -> None:
    facts = hardware_facts(model_dir=tmp_path).model_dump()
    metrics = node_metrics(model_dir=tmp_path).model_dump()
    with pytest.raises(ValidationError):
        HardwareFacts.model_validate({**facts, "gpu": "none"})
    with pytest.raises(ValidationError):
        NodeMetrics.model_validate({**metrics, "fan_rpm": 0})


def test_models_round_trip_json(tmp_path: Path) -> None:
    facts = hardware_facts(model_dir=tmp_path)
    assert HardwareFacts.model_validate_json(facts.model_dump_json()) == facts


def test_throttled_bits_match_docs() -> None:
    assert sorted(hardware.THROTTLED_BITS) == [0, 1, 2, 3, 16, 17, 18, 19]
