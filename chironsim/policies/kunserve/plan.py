"""Which instances fuse together: the released code's static groups, or a greedy drop plan.

The released code groups instances statically, ``group_size`` consecutive instances each, and a
whole group drops together (``reference/llumnix_kunserve.md`` B.1, "Drop-plan generation"). The
paper instead describes an O(N log N) greedy "drop plan" that balances the memory needed against
the pipeline's overhead by forming the smallest groups that free enough memory; its details are
not published (B.1, D.2). :func:`greedy_drop_plan` is therefore a **reconstruction** of that
description, not the paper's algorithm.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def static_groups(instance_ids: Sequence[str], group_size: int) -> list[tuple[str, ...]]:
    """Consecutive groups of ``group_size`` in the order given; the last group holds the
    remainder (a group of one never fuses: it has no peer)."""
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    return [tuple(instance_ids[i:i + group_size]) for i in range(0, len(instance_ids), group_size)]


def greedy_drop_plan(needs: Mapping[str, int], usage: Mapping[str, float],
                     gain_blocks: Mapping[int, int]) -> list[tuple[str, ...]]:
    """Groups to fuse (a reconstruction, see the module docstring).

    needs: blocks each overloaded instance lacks (queued demand − free; only > 0 counts);
    usage: every other instance that may join a group, by usage (demanded ÷ capacity);
    gain_blocks: blocks a fused group of g members adds over its members' own, per g ≥ 2
    (``chironsim.perf.drop.fused_blocks_gained``), whose largest key is the largest group.

    The neediest instance first (ties: smaller id), each takes the smallest g whose gain covers
    its need (the largest g if none does) and the g − 1 least-used partners left (ties: smaller
    id); an instance is in at most one group. When partners run out, a group takes those left;
    with none left, planning stops. Sorting dominates: O(N log N).
    """
    sizes = sorted(g for g in gain_blocks if g >= 2)
    if not sizes:
        raise ValueError("gain_blocks needs at least one group size >= 2")
    needy = sorted(((-n, i) for i, n in needs.items() if n > 0))
    partners = sorted((u, i) for i, u in usage.items() if needs.get(i, 0) <= 0)
    plan, next_partner = [], 0
    for negative_need, instance in needy:
        if next_partner >= len(partners):
            break
        size = next((g for g in sizes if gain_blocks[g] >= -negative_need), sizes[-1])
        taken = partners[next_partner:next_partner + size - 1]
        next_partner += len(taken)
        plan.append((instance, *(i for _, i in taken)))
    return plan
