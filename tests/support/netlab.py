"""Separate hosts on one machine for multi-host tests: network namespaces we create.

`NetLab` makes a Linux bridge in the root namespace (the coordinator's host, at
10.77.<subnet>.1) and one network namespace per agent host, each with its own loopback
and a veth link into the bridge (10.77.<subnet>.<10 + i>). Processes run in a host with
`ip netns exec`; `cut(i)` takes a host's link down and `restore(i)` brings it back, and
`shape(i, mbit=...)` limits its bandwidth with `tc` (`shape_duplex` both ways, like a NIC;
`shape_gateway` what the root namespace sends). `measure_mbit` checks a shaped path.
Everything is removed on `close()`. Needs root and iproute2; `available()` says why not
when it cannot work.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.requirements import missing


def _ip(*args: str, netns: str | None = None) -> None:
    command = ["ip", *args] if netns is None else ["ip", "netns", "exec", netns, "ip", *args]
    subprocess.run(command, check=True, capture_output=True, timeout=30)


def _tbf(device: str, *, mbit: float, netns: str | None = None) -> None:
    """A token bucket of `mbit` on `device`'s egress. Its burst is at least rate/HZ (one
    timer tick's worth for HZ >= 100), else tbf cannot reach the rate at high rates."""
    burst = max(4096, int(mbit * 1e6 / 8 / 100))
    prefix = [] if netns is None else ["ip", "netns", "exec", netns]
    subprocess.run([*prefix, "tc", "qdisc", "replace", "dev", device, "root", "tbf", "rate",
                    f"{mbit}mbit", "burst", str(burst), "latency", "400ms"],
                   check=True, capture_output=True, timeout=30)


# Counts bytes from the first to the end of one TCP stream; prints Mbit/s.
_SINK = """import socket, sys, time
server = socket.create_server((sys.argv[1], int(sys.argv[2])))
print("ready", flush=True)
server.settimeout(30)
conn, _ = server.accept()
conn.settimeout(30)
conn.recv(1 << 16)  # the clock starts once data flows
total, start = 0, time.monotonic()
while data := conn.recv(1 << 16):
    total += len(data)
print(total * 8 / 1e6 / (time.monotonic() - start), flush=True)
"""
# Sends zeros to HOST:PORT for SECONDS.
_SOURCE = """import socket, sys, time
conn = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=30)
block, end = bytes(1 << 16), time.monotonic() + float(sys.argv[3])
while time.monotonic() < end:
    conn.sendall(block)
conn.close()
"""


def available() -> str | None:
    """None if namespaces can be made here, else the reason."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "iproute2's `ip` is not installed (apt-get install iproute2)"
    probe = f"slmprobe{os.getpid() % 100000}"
    try:
        _ip("netns", "add", probe)
    except subprocess.CalledProcessError as exc:
        return f"cannot create a network namespace: {exc.stderr.decode().strip()}"
    _ip("netns", "del", probe)
    return None


@dataclass
class NetLab:
    hosts: int
    subnet: int = 77
    tag: str = field(default_factory=lambda: f"s{os.getpid() % 10000}")
    made: list[tuple[str, ...]] = field(default_factory=list)

    @property
    def bridge(self) -> str:
        return f"{self.tag}br"

    @property
    def gateway(self) -> str:
        return f"10.77.{self.subnet}.1"

    def netns(self, host: int) -> str:
        return f"{self.tag}h{host}"

    def address(self, host: int) -> str:
        return f"10.77.{self.subnet}.{10 + host}"

    def _veth(self, host: int) -> str:
        return f"{self.tag}v{host}"  # the root side of the host's link

    def open(self) -> NetLab:
        _ip("link", "add", self.bridge, "type", "bridge")
        self.made.append(("link", "del", self.bridge))
        _ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        self._allow_host_to_host()
        for host in range(1, self.hosts + 1):
            ns, veth, peer = self.netns(host), self._veth(host), f"{self.tag}p{host}"
            _ip("netns", "add", ns)
            self.made.append(("netns", "del", ns))
            _ip("link", "add", veth, "type", "veth", "peer", "name", peer)
            self.made.append(("link", "del", veth))
            _ip("link", "set", peer, "netns", ns)
            _ip("link", "set", veth, "master", self.bridge)
            _ip("link", "set", veth, "up")
            _ip("link", "set", "lo", "up", netns=ns)
            _ip("addr", "add", f"{self.address(host)}/24", "dev", peer, netns=ns)
            _ip("link", "set", peer, "up", netns=ns)
        return self

    def _allow_host_to_host(self) -> None:
        """Let hosts reach each other across the bridge. With br_netfilter loaded (Docker
        loads it) bridged frames pass iptables' FORWARD chain, whose policy Docker sets to
        DROP; this accepts our bridge's own traffic only, and `close()` removes the rule."""
        rule = ["FORWARD", "-i", self.bridge, "-o", self.bridge, "-j", "ACCEPT"]
        if shutil.which("iptables") is None:
            return
        added = subprocess.run(["iptables", "-I", *rule], capture_output=True, timeout=30,
                               check=False)
        if added.returncode == 0:
            self.made.append(("iptables", "-D", *rule))

    def close(self) -> None:
        for args in reversed(self.made):
            command = list(args) if args[0] == "iptables" else ["ip", *args]
            subprocess.run(command, capture_output=True, timeout=30, check=False)
        self.made.clear()

    def __enter__(self) -> NetLab:
        return self.open()

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def wrapper(self, host: int) -> list[str]:
        """Prefix for a command to run on `host`."""
        return ["ip", "netns", "exec", self.netns(host)]

    def cut(self, host: int) -> None:
        _ip("link", "set", self._veth(host), "down")

    def restore(self, host: int) -> None:
        _ip("link", "set", self._veth(host), "up")

    def shape(self, host: int, *, mbit: float) -> None:
        """Limit the host's link toward it to `mbit` (token bucket)."""
        _tbf(self._veth(host), mbit=mbit)

    def shape_duplex(self, host: int, *, mbit: float) -> None:
        """Limit the host's link to `mbit` each way, like a full-duplex NIC: what it
        receives (the root side of its veth) and what it sends (its side, in its netns)."""
        _tbf(self._veth(host), mbit=mbit)
        _tbf(f"{self.tag}p{host}", mbit=mbit, netns=self.netns(host))

    def shape_gateway(self, *, mbit: float) -> None:
        """Limit what the root namespace (the coordinator's host) sends into the bridge to
        `mbit`, in all: locally sent packets leave through the bridge device's own qdisc,
        while frames the bridge forwards between hosts do not pass it. Checked with
        `measure_mbit` with only this shaping, at 80 Mbit/s: root to a host 76.6 Mbit/s of
        payload (0.96: TCP/IP headers) against 12.7 Gbit/s unshaped; two streams to two
        hosts at once 76.9 in sum; host to host and host to root still 12 Gbit/s."""
        _tbf(self.bridge, mbit=mbit)

    def link_bytes(self, host: int) -> tuple[int, int]:
        """(received, sent): bytes `host` got and sent over its link so far (host 0: what
        the root namespace itself got from and sent into the bridge)."""
        device = self.bridge if host == 0 else self._veth(host)
        stats = [int(Path(f"/sys/class/net/{device}/statistics/{name}_bytes").read_text())
                 for name in ("rx", "tx")]
        # the root side of a veth sends what its host receives; the bridge device, what
        # the root namespace sends
        return (stats[1], stats[0]) if host else (stats[0], stats[1])

    def measure_mbit(self, source: int, sink: int, *, seconds: float = 3.0,
                     port: int = 7999) -> float:
        """Throughput of one TCP stream from host `source` to host `sink` (0 is the root
        namespace) over `seconds`, Mbit/s: a check that shaping gives the rate asked."""
        def on(host: int) -> list[str]:
            return [] if host == 0 else self.wrapper(host)

        address = self.gateway if sink == 0 else self.address(sink)
        with subprocess.Popen([*on(sink), sys.executable, "-c", _SINK, address, str(port)],
                              stdout=subprocess.PIPE, text=True) as receiver:
            try:
                if receiver.stdout is None or receiver.stdout.readline().strip() != "ready":
                    raise RuntimeError(f"the throughput sink on host {sink} did not start "
                                       f"(is port {port} taken there?)")
                subprocess.run([*on(source), sys.executable, "-c", _SOURCE, address,
                                str(port), str(seconds)], check=True, timeout=seconds + 30)
                out, _ = receiver.communicate(timeout=30)
            finally:
                receiver.kill()
        return float(out.strip())


@contextlib.contextmanager
def required_lab(*, hosts: int, subnet: int) -> Iterator[NetLab]:
    """A NetLab, or skip (locally) / fail (in CI) saying why namespaces cannot be made."""
    reason = available()
    if reason is not None:
        missing(reason)
    with NetLab(hosts=hosts, subnet=subnet) as lab:
        yield lab
