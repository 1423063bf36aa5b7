"""CurveZMQ keys: every link between an agent and the coordinator is encrypted and each end
is known by its long-term public key.

A key pair is made on first start with pyzmq's certificate helpers: `NAME.key` holds the
public key (share it), `NAME.key_secret` both keys (mode 0600, never leaves the machine).
An agent needs the coordinator's public key (`--coordinator-key`, the key text or the
path of the coordinator's `hub.key`); the coordinator pins each node to the public key it
first registered with and refuses that node name from any other key until the operator
revokes it.
"""

from __future__ import annotations

import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq
import zmq.auth

from node_agent.errors import AgentError

KEY_CHARS = 40  # a Z85-encoded 32-byte Curve25519 key


class CurveKeyError(AgentError):
    """A CURVE key is missing, malformed, or its secret file is readable by others."""


@dataclass(frozen=True)
class KeyPair:
    public: bytes  # Z85 text, 40 bytes
    secret: bytes

    def apply_client(self, socket: zmq.Socket[Any], *, server_key: bytes) -> None:
        """Make `socket` a CURVE client of the server with public key `server_key`."""
        socket.curve_secretkey = self.secret
        socket.curve_publickey = self.public
        socket.curve_serverkey = server_key

    def apply_server(self, socket: zmq.Socket[Any]) -> None:
        socket.curve_secretkey = self.secret
        socket.curve_publickey = self.public
        socket.curve_server = True


def load_or_create(directory: Path, name: str) -> KeyPair:
    """The key pair `directory/name.key_secret`, created (0600) if it does not exist yet."""
    secret_file = directory / f"{name}.key_secret"
    if not secret_file.exists():
        directory.mkdir(parents=True, exist_ok=True)
        public_file, made = zmq.auth.create_certificates(str(directory), name)
        os.chmod(made, 0o600)
        os.chmod(public_file, 0o644)
    mode = stat.S_IMODE(secret_file.stat().st_mode)
    if mode & 0o077:
        raise CurveKeyError(f"{secret_file} is readable by other users (mode {mode:o}); "
                        f"run: chmod 600 {secret_file}")
    public, secret = zmq.auth.load_certificate(str(secret_file))
    if secret is None:
        raise CurveKeyError(f"{secret_file} holds no secret key; delete it to make a new pair")
    return KeyPair(public=public, secret=secret)


def parse_public_key(value: str) -> bytes:
    """A public key given as its 40 Z85 characters, or as the path of a `.key` file."""
    text = value.strip()
    if len(text) == KEY_CHARS and not Path(text).exists():
        key = text.encode()
    else:
        path = Path(text)
        if not path.is_file():
            raise CurveKeyError(f"coordinator key: {value!r} is neither a 40-character key nor "
                            "a key file; copy the key the coordinator prints at start (or "
                            "its <data-dir>/hub.key)")
        try:
            key, _ = zmq.auth.load_certificate(str(path))
        except (OSError, ValueError) as exc:
            raise CurveKeyError(f"coordinator key: cannot read {path}: {exc}") from None
    try:
        zmq.utils.z85.decode(key)
    except (ValueError, KeyError):
        raise CurveKeyError("coordinator key: not a Z85-encoded key (40 characters of "
                        "0-9 a-z A-Z .-:+=^!/*?&<>()[]{}@%$#)") from None
    if len(key) != KEY_CHARS:
        raise CurveKeyError(f"coordinator key: {len(key)} characters, expected {KEY_CHARS}")
    return key


def wait_for_public_key(value: str, *, timeout_s: float) -> bytes:
    """`parse_public_key`, waiting up to `timeout_s` for a key file that is not there yet
    (the coordinator makes it on its first start, e.g. in a shared compose volume)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return parse_public_key(value)
        except CurveKeyError:
            looks_like_path = "/" in value or value.endswith(".key")
            if not looks_like_path or time.monotonic() >= deadline:
                raise
            time.sleep(0.5)
