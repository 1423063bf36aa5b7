"""Relay envelopes and the choice of upstream, on plain data."""

from __future__ import annotations

import pytest

from node_agent.errors import ProtocolError
from node_agent.protocol import RELAY, OverlayPeer, Topology
from node_agent.relay import HUB, Upstream, choose_upstream, unwrap, wrap_down


def test_envelopes_stack_one_hop_per_relay_and_unwrap_to_the_origin() -> None:
    message = [b'{"type": "heartbeat", "seq": 1}']
    # the origin (id c) sent via relay b, which sent via relay a to the hub
    at_b = [RELAY, b"c", b"key-c", *message]
    at_hub = [RELAY, b"b", b"key-b", *at_b]
    path, key, frames = unwrap(b"a", b"key-a", at_hub)
    assert (path, key, frames) == ([b"a", b"b", b"c"], b"key-c", message)
    assert wrap_down(path, message) == [b"a", RELAY, b"b", RELAY, b"c", *message]
    assert unwrap(b"a", b"key-a", message) == ([b"a"], b"key-a", message)


@pytest.mark.parametrize("frames", [[RELAY, b"c"], [RELAY, b"c", b"k"],
                                    [RELAY, b"x", b"k"] * 40 + [b"{}"]])
def test_malformed_envelopes_are_refused(frames: list[bytes]) -> None:
    with pytest.raises(ProtocolError):
        unwrap(b"a", b"k", frames)


def peer(position: int, *, up: bool = True, relay: bool = True) -> OverlayPeer:
    return OverlayPeer(position=position, node_id=position + 10, up=up,
                       relay=f"10.0.0.{position}:7070" if relay else None,
                       public_key=chr(ord("a") + position) * 40)


def topology(position: int, *peers: OverlayPeer) -> Topology:
    return Topology(position=position, fanout=2, nodes=peers)


def test_upstream_is_the_tree_parent_then_around_dead_nodes_then_the_hub() -> None:
    nodes = [peer(p) for p in range(1, 8)]
    assert choose_upstream(None, down=frozenset()) == HUB
    assert choose_upstream(topology(1, *nodes), down=frozenset()) == HUB
    assert choose_upstream(topology(7, *nodes), down=frozenset()) == Upstream(
        position=3, endpoint="10.0.0.3:7070", public_key=b"d" * 40)
    around = choose_upstream(topology(7, *nodes), down=frozenset({3}))
    assert around.position not in (3, 0) and around.endpoint is not None
    down_by_coordinator = [peer(p, up=p != 3) for p in range(1, 8)]
    assert choose_upstream(topology(7, *down_by_coordinator), down=frozenset()) == around


def test_a_parent_that_does_not_relay_is_skipped() -> None:
    nodes = [peer(p, relay=p != 1) for p in range(1, 8)]
    assert choose_upstream(topology(4, *nodes), down=frozenset()) == HUB  # 4 links to 0
    assert choose_upstream(topology(3, *nodes), down=frozenset()).position == 5


def test_a_fanout_covering_the_fleet_is_the_star() -> None:
    nodes = [peer(p) for p in range(1, 8)]
    star = Topology(position=5, fanout=7, nodes=tuple(nodes))
    assert all(choose_upstream(star.model_copy(update={"position": p}), down=frozenset())
               == HUB for p in range(1, 8))
