"""The status page in a real headless Chromium, against a running fleet.

Chromium renders the page the coordinator serves; the rendered DOM must show every node
with its state and every job with its progress, and a screenshot must come out. Flags
keep Chromium off the network (this machine has none) and out of any profile.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from coordinator.client import Client
from coordinator.demo import LocalFleet
from tests.support.requirements import missing

pytestmark = pytest.mark.integration

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync")


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("chromium")
    if binary is None:
        missing("chromium is not installed; run make test (it installs Debian's chromium)")
    assert binary is not None
    return subprocess.run([binary, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *args],
                          capture_output=True, text=True, timeout=120)


def test_chromium_renders_nodes_and_jobs(fleet: LocalFleet, client: Client,
                                         tmp_path: Path) -> None:
    job = client.submit({"name": "browser-visible", "models": ["tiny-llama"], "limit": 1,
                         "params": {"max_tokens": 2},
                         "tasks": [{"task": "classification",
                                    "dataset": "builtin:classification"}]})
    dom = _chromium(tmp_path, "--dump-dom", f"{fleet.api_url}/")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "<title>slmfleet status</title>" in dom.stdout
    for node in client.nodes():
        assert f"<td>{node['name']}</td>" in dom.stdout
        assert f'class="state-{node["state"]}"' in dom.stdout
    assert f"<td>{job['name']}</td>" in dom.stdout
    assert "<progress" in dom.stdout

    shot = tmp_path / "status.png"
    result = _chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,900",
                       f"{fleet.api_url}/")
    assert result.returncode == 0, result.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
