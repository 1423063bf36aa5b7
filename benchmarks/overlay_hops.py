"""Overlay hop counts against their anchor ⌈log_k N⌉, with and without failures.

For each fleet size N and fan-out k, prints the mean and max hops from an agent to the
coordinator along the tree, the same when k - 1 interior nodes (the root's first
children, the worst place to fail) are down and routes go around them over the De
Bruijn shortcuts, how many nodes are then cut off, and how many links one more join
changes. Ratios are against ⌈log_k N⌉ (the height of a complete k-ary tree).

Run: `.venv/bin/python -m benchmarks.overlay_hops`.
"""

from __future__ import annotations

import statistics

from topology import Overlay


def ceil_log(n: int, k: int) -> int:
    h, power = 0, 1
    while power < n:
        power *= k
        h += 1
    return h


def main() -> None:
    print(f"{'N':>6}{'k':>3}{'log':>5}{'mean':>7}{'max':>5}{'max/log':>9}"
          f"{'fail mean':>11}{'fail max':>10}{'cut off':>9}{'join Δ':>8}{'median Δ':>10}")
    for k in (2, 3, 4):
        for n in (7, 15, 63, 255, 1023):
            overlay = Overlay(nodes=n, fanout=k)
            anchor = max(ceil_log(n + 1, k), 1)
            hops = [len(overlay.path_to_root(i)) - 1 for i in range(1, n + 1)]
            down = frozenset(range(1, k))  # k - 1 of the root's children
            routes = [overlay.route_to_root(i, down=down) for i in range(1, n + 1)
                      if i not in down]
            alive = [len(r) - 1 for r in routes if r is not None]
            cut = sum(1 for r in routes if r is None)
            sizes = range(max(n // 2, 1), n + 1)
            typical = statistics.median(Overlay(nodes=m, fanout=k).edges_changed_by_join()
                                        for m in sizes)
            print(f"{n:>6}{k:>3}{anchor:>5}{sum(hops) / n:>7.2f}{max(hops):>5}"
                  f"{max(hops) / anchor:>9.2f}{sum(alive) / len(alive):>11.2f}"
                  f"{max(alive):>10}{cut:>9}{overlay.edges_changed_by_join():>8}"
                  f"{typical:>10.0f}")


if __name__ == "__main__":
    main()
