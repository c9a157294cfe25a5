"""What the KunServe logic reads of one instance (or of one fused group) at a sample or check.

The released code's trigger reads four numbers per instance (``reference/llumnix_kunserve.md``
B.2, ``flash_backend.py`` ``vote_for`` and ``llm_engine.py`` ``get_event``): the blocks demanded
by its waiting, swapped and running requests, its block capacity, its free blocks, and the
blocks its queued (not yet admitted) requests need. A fused group reports one sample for the
whole group: its pooled capacity after the drop and the sums over its micro-batch queues.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class UsageSample:
    """One instance's (or fused group's) KV state, in blocks.

    ``demanded_blocks``: Σ blocks demanded by waiting, swapped and running requests (may exceed
    the capacity: that is the overload); ``capacity_blocks``: the allocator's size;
    ``free_blocks``: unallocated blocks; ``pending_blocks``: blocks the queued requests need;
    ``queued``: requests waiting for admission (the restore rule needs "no queue").
    """

    instance_id: str
    demanded_blocks: int
    capacity_blocks: int
    free_blocks: int
    pending_blocks: int
    queued: int

    def __post_init__(self) -> None:
        if self.capacity_blocks < 1 or min(self.demanded_blocks, self.free_blocks, self.pending_blocks,
                                           self.queued) < 0:
            raise ValueError(f"a usage sample needs capacity >= 1 and no negative count: {self}")

    @property
    def usage(self) -> float:
        """Demanded ÷ capacity (the code's ``usage%`` ÷ 100); above 1 under overload."""
        return self.demanded_blocks / self.capacity_blocks
