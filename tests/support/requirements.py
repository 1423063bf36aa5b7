"""Real dependencies of integration tests: skip with a reason locally, fail in CI.

An integration test that needs a real part (llama.cpp, a model package) must never pass
silently in CI because the part is missing, so in CI (`CI` set) a missing part is a
failure; on a developer machine it is a skip that says what to install.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def missing(reason: str) -> None:
    """Skip (locally) or fail (in CI) the calling test with `reason`."""
    if in_ci():
        pytest.fail(f"{reason} (required in CI)", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


def require_module(name: str, *, install_hint: str) -> ModuleType:
    """Import `name`, or skip/fail with a hint on how to get it."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        missing(f"cannot import {name!r} ({exc}); {install_hint}")
        raise  # unreachable: missing() always raises
