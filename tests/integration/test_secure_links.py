"""CurveZMQ on the hub's links, against a real coordinator process: nothing from a client
without the hub's key is processed, a node is pinned to its key, and a revoked key is
refused at the handshake while the node may return with a new key."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

from coordinator.client import Client
from coordinator.demo import LocalFleet, joined
from node_agent import curve
from node_agent.hardware import hardware_facts
from node_agent.protocol import PROTOCOL_VERSION, Register, encode

pytestmark = pytest.mark.integration

TOKEN = "curve-token"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFleet]:
    with LocalFleet(data_dir=tmp_path_factory.mktemp("curve"), nodes=0, token=TOKEN) as fleet:
        joined(fleet, agents=0)
        yield fleet


@contextlib.contextmanager
def dealer(fleet: LocalFleet, *, keys: curve.KeyPair | None,
           server_key: bytes | None = None) -> Iterator[zmq.Socket[bytes]]:
    """A DEALER to the hub: a CURVE client with `keys` (and the hub's real key unless
    `server_key` is given), or plaintext when `keys` is None."""
    context = zmq.Context()
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDTIMEO, 3000)  # a refused handshake leaves no peer to send to
    if keys is not None:
        keys.apply_client(sock, server_key=server_key or
                          curve.parse_public_key(str(fleet.hub_key_file)))
    sock.connect(f"tcp://127.0.0.1:{fleet.hub_port}")
    try:
        yield sock
    finally:
        sock.close()
        context.term()


def register(sock: zmq.Socket[bytes], name: str) -> bool:
    """Send a registration; False if no connection to the hub ever came up to take it."""
    try:
        sock.send_multipart(encode(Register(protocol=PROTOCOL_VERSION, token=TOKEN,
                                            name=name, facts=hardware_facts())))
    except zmq.Again:
        return False
    return True


def reply(sock: zmq.Socket[bytes], *, timeout_s: float = 5.0) -> dict[str, object] | None:
    """The hub's next answer that is not routine (desired workers, heartbeats, the
    overlay), or None."""
    deadline = time.monotonic() + timeout_s
    while (left := deadline - time.monotonic()) > 0:
        if not sock.poll(timeout=int(left * 1000)):
            return None
        body: dict[str, object] = json.loads(sock.recv_multipart()[0])
        if body["type"] not in ("desired_workers", "heartbeat", "topology"):
            return body
    return None


def new_keys() -> curve.KeyPair:
    return curve.KeyPair(*zmq.curve_keypair())


def names(client: Client) -> set[str]:
    return {n["name"] for n in client.nodes()}


def test_clients_without_the_hubs_key_are_never_heard(fleet: LocalFleet,
                                                      client: Client) -> None:
    with dealer(fleet, keys=None) as plaintext:
        register(plaintext, "plaintext-node")
        assert reply(plaintext, timeout_s=2) is None
    wrong_server = new_keys().public
    with dealer(fleet, keys=new_keys(), server_key=wrong_server) as impostor:
        register(impostor, "wrong-server-key")
        assert reply(impostor, timeout_s=2) is None
    assert not names(client) & {"plaintext-node", "wrong-server-key"}


def test_a_node_is_pinned_to_the_key_it_registered_with(fleet: LocalFleet,
                                                        client: Client) -> None:
    first = new_keys()
    with dealer(fleet, keys=first) as sock:
        register(sock, "pinned")
        assert (reply(sock) or {})["type"] == "welcome"
    with dealer(fleet, keys=new_keys()) as thief:
        register(thief, "pinned")
        refused = reply(thief) or {}
    assert refused["type"] == "rejected" and "pinned to another key" in str(refused["reason"])
    (node,) = [n for n in client.nodes() if n["name"] == "pinned"]
    assert node["public_key"] == first.public.decode()
    with dealer(fleet, keys=first) as again:  # the owner of the key is welcome back
        register(again, "pinned")
        assert (reply(again) or {})["type"] == "welcome"


def test_a_revoked_key_is_refused_and_the_node_may_return_with_a_new_one(
        fleet: LocalFleet, client: Client) -> None:
    old = new_keys()
    with dealer(fleet, keys=old) as sock:
        register(sock, "revokee")
        welcome = reply(sock) or {}
        assert welcome["type"] == "welcome"
        revoked = client.revoke_node(int(welcome["node_id"]))  # type: ignore[call-overload]
        assert revoked["revoked"] is True and revoked["public_key"] is None
        told = reply(sock, timeout_s=10) or {}
        assert told["type"] == "rejected" and told["reregister"] is False
        assert "revoked by the operator" in str(told["reason"])

    with dealer(fleet, keys=old) as returning:  # the handshake itself is refused now
        register(returning, "revokee")
        assert reply(returning, timeout_s=2) is None

    fresh = new_keys()
    with dealer(fleet, keys=fresh) as reinstalled:
        register(reinstalled, "revokee")
        assert (reply(reinstalled) or {})["type"] == "welcome"
    (node,) = [n for n in client.nodes() if n["name"] == "revokee"]
    assert node["public_key"] == fresh.public.decode() and node["revoked"] is False


def test_an_agent_needs_a_valid_coordinator_key(fleet: LocalFleet, tmp_path: Path) -> None:
    import subprocess
    import sys

    agent = subprocess.run(
        [sys.executable, "-m", "coordinator.cli", "agent", "--coordinator",
         f"127.0.0.1:{fleet.hub_port}", "--token", TOKEN, "--coordinator-key", "not-a-key",
         "--cache-dir", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert agent.returncode == 2
    assert "neither a 40-character key nor a key file" in " ".join(agent.stderr.split())
