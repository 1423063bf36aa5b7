"""The import direction of our packages: topology ← node_agent ← coordinator.

`topology` imports nothing of ours; `node_agent` never imports `coordinator`. Checked on
the source with `ast`, so a violation anywhere — even in a function body — fails here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = {
    "topology": {"node_agent", "coordinator"},
    "node_agent": {"coordinator"},
}


def _imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_respects_import_direction(package: str) -> None:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"no sources found for {package}"
    violations = {str(f.relative_to(ROOT)): sorted(_imported_packages(f) & FORBIDDEN[package])
                  for f in files}
    assert {f: v for f, v in violations.items() if v} == {}


def test_checker_sees_function_level_imports(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("def f():\n    from coordinator.jobs import submit_job\n")
    assert _imported_packages(sample) == {"coordinator"}
