"""Where a request goes.

The released benchmark's client sends each request to the group (server) with the fewest
outstanding requests, and inside a group to the micro-batch queue with the fewest unfinished
requests (``reference/llumnix_kunserve.md`` B.2, "Dispatch in the benchmark"; issue 10 item 2).
The first step is the policy's (:func:`pick_group`). The second is the fused group's own: its
leader puts each request it runs on the queue with the fewest unfinished requests and
rebalances decodes by moving (max − min)/2 requests
(:mod:`chironsim.sim.mechanisms.microbatch`, ``pick_queue`` and ``rebalance_decodes``).
The released code's "lookahead batch formulation" (B.1) places new prefills longest first on
the queue with the fewest pending prefill tokens; the mechanism chunks each round's prefill
across the queues instead, so that queues balance within a round. Ties go to the smaller id
or index so runs are deterministic.
"""

from __future__ import annotations

from collections.abc import Mapping


def pick_group(outstanding: Mapping[int, int]) -> int | None:
    """The group with the fewest outstanding requests (ties: smaller id); None if there is none."""
    if not outstanding:
        return None
    return min(outstanding, key=lambda g: (outstanding[g], g))
