"""A fake agent on a plain (blocking) ZeroMQ socket, for a process or thread of its own:
a hub whose event loop a test blocks does not block it."""

from __future__ import annotations

import zmq

from node_agent import curve
from node_agent.hardware import hardware_facts
from node_agent.protocol import PROTOCOL_VERSION, Register, encode


def registering_dealer(context: zmq.Context[zmq.Socket[bytes]], *, port: int,
                       server_key: bytes, name: str, unbounded: bool = False
                       ) -> zmq.Socket[bytes]:
    """A CURVE DEALER connected to the hub on loopback `port` that has sent its Register
    (token "t") as `name`; `unbounded` lifts the send high-water mark (for floods)."""
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    if unbounded:
        sock.setsockopt(zmq.SNDHWM, 0)
    curve.KeyPair(*zmq.curve_keypair()).apply_client(sock, server_key=server_key)
    sock.connect(f"tcp://127.0.0.1:{port}")
    sock.send_multipart(encode(Register(protocol=PROTOCOL_VERSION, token="t", name=name,
                                        facts=hardware_facts())))
    return sock
