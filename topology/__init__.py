"""Pure overlay topology library: a rooted k-ary tree with De Bruijn shortcuts."""

from topology.overlay import ROOT, Edge, NodeId, Overlay, OverlayStats, TopologyError

__all__ = ["ROOT", "Edge", "NodeId", "Overlay", "OverlayStats", "TopologyError"]
