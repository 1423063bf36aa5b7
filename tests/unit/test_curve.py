"""CURVE key files: made once with 0600 secrets, reloaded unchanged, refused when others can
read them; public keys given as text or as a key file, with clear errors otherwise."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from node_agent.curve import CurveKeyError, load_or_create, parse_public_key


def test_a_key_pair_is_made_once_with_a_private_secret_file(tmp_path: Path) -> None:
    keys = load_or_create(tmp_path / "keys", "agent")
    secret = tmp_path / "keys" / "agent.key_secret"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert len(keys.public) == len(keys.secret) == 40 and keys.public != keys.secret
    assert load_or_create(tmp_path / "keys", "agent") == keys, "kept across restarts"
    assert keys.secret.decode() not in (tmp_path / "keys" / "agent.key").read_text()


def test_a_secret_readable_by_others_is_refused(tmp_path: Path) -> None:
    load_or_create(tmp_path, "hub")
    os.chmod(tmp_path / "hub.key_secret", 0o644)
    with pytest.raises(CurveKeyError, match="readable by other users.*chmod 600"):
        load_or_create(tmp_path, "hub")


def test_public_keys_from_text_or_file(tmp_path: Path) -> None:
    keys = load_or_create(tmp_path, "hub")
    assert parse_public_key(keys.public.decode()) == keys.public
    assert parse_public_key(f"  {keys.public.decode()}\n") == keys.public
    assert parse_public_key(str(tmp_path / "hub.key")) == keys.public


@pytest.mark.parametrize(("value", "message"), [
    ("not-a-key", "neither a 40-character key nor a key file"),
    ("/nonexistent/hub.key", "neither a 40-character key nor a key file"),
    ("~" * 40, "not a Z85-encoded key"),
])
def test_bad_public_keys_are_refused_with_the_fix(value: str, message: str) -> None:
    with pytest.raises(CurveKeyError, match=message):
        parse_public_key(value)


def test_a_file_that_is_not_a_key_file_is_refused(tmp_path: Path) -> None:
    junk = tmp_path / "hub.key"
    junk.write_text("hello\n")
    with pytest.raises(CurveKeyError, match="cannot read|Z85|characters"):
        parse_public_key(str(junk))
