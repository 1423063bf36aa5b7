"""Separate hosts on one machine for multi-host tests: network namespaces we create.

`NetLab` makes a Linux bridge in the root namespace (the coordinator's host, at
10.77.<subnet>.1) and one network namespace per agent host, each with its own loopback
and a veth link into the bridge (10.77.<subnet>.<10 + i>). Processes run in a host with
`ip netns exec`; `cut(i)` takes a host's link down and `restore(i)` brings it back, and
`shape(i, mbit=...)` limits its bandwidth with `tc`. Everything is removed on `close()`.
Needs root and iproute2; `available()` says why not when it cannot work.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field

from tests.support.requirements import missing


def _ip(*args: str, netns: str | None = None) -> None:
    command = ["ip", *args] if netns is None else ["ip", "netns", "exec", netns, "ip", *args]
    subprocess.run(command, check=True, capture_output=True, timeout=30)


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
        subprocess.run(["tc", "qdisc", "replace", "dev", self._veth(host), "root", "tbf",
                        "rate", f"{mbit}mbit", "burst", "32kbit", "latency", "400ms"],
                       check=True, capture_output=True, timeout=30)


@contextlib.contextmanager
def required_lab(*, hosts: int, subnet: int) -> Iterator[NetLab]:
    """A NetLab, or skip (locally) / fail (in CI) saying why namespaces cannot be made."""
    reason = available()
    if reason is not None:
        missing(reason)
    with NetLab(hosts=hosts, subnet=subnet) as lab:
        yield lab
