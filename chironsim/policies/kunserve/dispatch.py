"""Where a request goes.

The released benchmark's client sends each request to the group (server) with the fewest
outstanding requests, and inside a group to the micro-batch queue with the fewest unfinished
requests (``reference/llumnix_kunserve.md`` B.2, "Dispatch in the benchmark"; issue 10 item 2).
The first step is the policy's (:func:`pick_group`). The second is the fused group's own: its
leader puts each request it runs on the queue with the fewest unfinished requests and
rebalances decodes by moving (max − min)/2 requests
(:mod:`chironsim.sim.mechanisms.microbatch`, ``pick_queue`` and ``rebalance_decodes``).
:func:`place_prefills` is the released code's approximation of the "lookahead batch
formulation" (B.1), new prefills placed longest first on the queue with the fewest pending
prefill tokens; the mechanism chunks each round's prefill across the queues instead, and this
function is kept for reference. Ties go to the smaller id or index so runs are deterministic.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence


def pick_group(outstanding: Mapping[int, int]) -> int | None:
    """The group with the fewest outstanding requests (ties: smaller id); None if there is none."""
    if not outstanding:
        return None
    return min(outstanding, key=lambda g: (outstanding[g], g))


def place_prefills(prompts: Mapping[int, int], pending_tokens: Sequence[int]) -> dict[int, int]:
    """Queue index per request id: longest prompt first (ties: smaller id), each onto the queue
    with the fewest pending prefill tokens so far (ties: lower index), counting the ones placed."""
    heap = [(tokens, i) for i, tokens in enumerate(pending_tokens)]
    if not heap:
        raise ValueError("a group has at least one micro-batch queue")
    heapq.heapify(heap)
    placed = {}
    for request, tokens in sorted(prompts.items(), key=lambda kv: (-kv[1], kv[0])):
        load, queue = heapq.heappop(heap)
        placed[request] = queue
        heapq.heappush(heap, (load + tokens, queue))
    return placed
