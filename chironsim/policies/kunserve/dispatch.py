"""Where a request goes, and how a fused group balances its micro-batch queues.

The released benchmark's client sends each request to the group (server) with the fewest
outstanding requests, and inside a group to the micro-batch queue with the fewest unfinished
requests (``reference/llumnix_kunserve.md`` B.2, "Dispatch in the benchmark"; issue 10 item 2).
A fused group keeps its micro-batch queues even by the code's approximation of the "lookahead
batch formulation" (B.1): new prefills are placed longest first on the queue with the fewest
pending prefill tokens, and decodes are rebalanced by moving (max − min)/2 requests. Ties go to
the smaller id or index so runs are deterministic.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence


def pick_group(outstanding: Mapping[int, int]) -> int | None:
    """The group with the fewest outstanding requests (ties: smaller id); None if there is none."""
    if not outstanding:
        return None
    return min(outstanding, key=lambda g: (outstanding[g], g))


def pick_queue(unfinished: Sequence[int]) -> int:
    """The micro-batch queue with the fewest unfinished requests (ties: lower index)."""
    if not unfinished:
        raise ValueError("a group has at least one micro-batch queue")
    return min(range(len(unfinished)), key=lambda i: (unfinished[i], i))


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


def rebalance_decodes(decodes: Sequence[int]) -> tuple[int, int, int] | None:
    """(from queue, to queue, requests) moving ⌊(max − min)/2⌋ decodes from the fullest queue to
    the emptiest (ties: lower index); None when that is 0."""
    if not decodes:
        return None
    most = max(range(len(decodes)), key=lambda i: (decodes[i], -i))
    least = min(range(len(decodes)), key=lambda i: (decodes[i], i))
    moved = (decodes[most] - decodes[least]) // 2
    return (most, least, moved) if moved > 0 else None
