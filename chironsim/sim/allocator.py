"""Paged KV-cache block accounting for one instance.

Blocks are interchangeable, so the allocator keeps counts per owner rather than block ids:
``free + Σ owned + Σ reserved == capacity`` on the GPU, and ``host_free + Σ swapped ==
host_capacity`` in host memory. Owners are any hashable key (request ids, or the instance's
pooled decode-growth account, see :mod:`chironsim.sim.decode_set`).
"""

from __future__ import annotations

from collections.abc import Hashable


class AllocationError(RuntimeError):
    """An operation would break an allocator invariant (a bug in the caller, not user input)."""


class KVBlockAllocator:
    """GPU and host block counts with owners, a watermark and migration reservations.

    The watermark is a number of blocks that *admissions* must leave free, so running
    sequences can still grow (vLLM's ``watermark``); appends for running sequences may use it.
    """

    def __init__(self, capacity: int, watermark: int = 0, host_capacity: int = 0) -> None:
        if capacity < 0 or watermark < 0 or host_capacity < 0:
            raise ValueError("capacities and watermark must be non-negative")
        self.capacity = capacity
        self.watermark = min(watermark, capacity)
        self.host_capacity = host_capacity
        self.free_blocks = capacity
        self.host_free_blocks = host_capacity
        self._owned: dict[Hashable, int] = {}
        self._reserved: dict[Hashable, int] = {}
        self._swapped: dict[Hashable, int] = {}

    # --- queries ---------------------------------------------------------------------------
    @property
    def used_blocks(self) -> int:
        return self.capacity - self.free_blocks

    def owned(self, owner: Hashable) -> int:
        return self._owned.get(owner, 0)

    def reserved(self, owner: Hashable) -> int:
        return self._reserved.get(owner, 0)

    def swapped(self, owner: Hashable) -> int:
        return self._swapped.get(owner, 0)

    @property
    def has_reservations(self) -> bool:
        return bool(self._reserved)

    def can_allocate(self, blocks: int, respect_watermark: bool = True) -> bool:
        floor = self.watermark if respect_watermark else 0
        return self.free_blocks - blocks >= floor

    def can_swap_in(self, owner: Hashable) -> bool:
        return self.can_allocate(self._swapped.get(owner, 0))

    def can_swap_out(self, owner: Hashable) -> bool:
        return self._owned.get(owner, 0) <= self.host_free_blocks

    # --- GPU blocks ------------------------------------------------------------------------
    def allocate(self, owner: Hashable, blocks: int, respect_watermark: bool = True) -> None:
        """Give ``owner`` ``blocks`` more blocks (admission respects the watermark)."""
        if blocks < 0:
            raise AllocationError(f"cannot allocate {blocks} blocks")
        if not self.can_allocate(blocks, respect_watermark):
            raise AllocationError(f"{blocks} blocks requested, {self.free_blocks} free")
        self.free_blocks -= blocks
        if blocks:
            self._owned[owner] = self._owned.get(owner, 0) + blocks

    def append(self, owner: Hashable, blocks: int = 1) -> None:
        """Grow a running sequence; may dip into the watermark."""
        self.allocate(owner, blocks, respect_watermark=False)

    def transfer(self, src: Hashable, dst: Hashable, blocks: int) -> None:
        """Move ownership of ``blocks`` from ``src`` to ``dst`` without touching the free pool."""
        have = self._owned.get(src, 0)
        if blocks < 0 or blocks > have:
            raise AllocationError(f"cannot transfer {blocks} blocks from an owner of {have}")
        if blocks == 0:
            return
        self._set(self._owned, src, have - blocks)
        self._owned[dst] = self._owned.get(dst, 0) + blocks

    def free(self, owner: Hashable) -> int:
        """Return all of ``owner``'s GPU blocks to the free pool; returns how many."""
        blocks = self._owned.pop(owner, 0)
        self.free_blocks += blocks
        return blocks

    # --- host memory (swap) -----------------------------------------------------------------
    def swap_out(self, owner: Hashable) -> int:
        """Move ``owner``'s blocks to host memory; returns the number moved."""
        blocks = self._owned.get(owner, 0)
        if blocks > self.host_free_blocks:
            raise AllocationError(f"host has {self.host_free_blocks} blocks free, need {blocks}")
        self.free(owner)
        self.host_free_blocks -= blocks
        if blocks:
            self._swapped[owner] = self._swapped.get(owner, 0) + blocks
        return blocks

    def swap_in(self, owner: Hashable) -> int:
        """Bring ``owner``'s swapped blocks back to the GPU (respects the watermark)."""
        blocks = self._swapped.get(owner, 0)
        self.allocate(owner, blocks)
        self._swapped.pop(owner, None)
        self.host_free_blocks += blocks
        return blocks

    def drop_swapped(self, owner: Hashable) -> int:
        """Forget ``owner``'s host copy (request finished elsewhere or was abandoned)."""
        blocks = self._swapped.pop(owner, 0)
        self.host_free_blocks += blocks
        return blocks

    # --- reservations (migration pre-allocation) -------------------------------------------
    def reserve(self, owner: Hashable, blocks: int) -> None:
        """Set aside free blocks for an incoming transfer; they count as used, owned by nobody."""
        if blocks < 0 or not self.can_allocate(blocks, respect_watermark=False):
            raise AllocationError(f"cannot reserve {blocks} blocks, {self.free_blocks} free")
        self.free_blocks -= blocks
        if blocks:
            self._reserved[owner] = self._reserved.get(owner, 0) + blocks

    def commit_reservation(self, owner: Hashable) -> int:
        """Turn ``owner``'s reservation into ownership (the transfer completed)."""
        blocks = self._reserved.pop(owner, 0)
        if blocks:
            self._owned[owner] = self._owned.get(owner, 0) + blocks
        return blocks

    def cancel_reservation(self, owner: Hashable) -> int:
        """Release ``owner``'s reservation (the transfer was aborted)."""
        blocks = self._reserved.pop(owner, 0)
        self.free_blocks += blocks
        return blocks

    # --- runtime resize (a fused group's drop and restore) ----------------------------------
    def resize(self, capacity: int, watermark: int | None = None) -> int:
        """Change the GPU capacity at runtime; returns the change in free blocks.

        Only free blocks appear or disappear: every owned and reserved block keeps its owner,
        so a resize never loses or double-counts one. Shrinking below the blocks in use
        (owned + reserved) is refused, leaving the allocator unchanged. ``watermark`` (blocks)
        replaces the old one, else the old one is kept, capped at the new capacity. Host
        memory is untouched.
        """
        if capacity < 0 or (watermark is not None and watermark < 0):
            raise AllocationError(f"cannot resize to capacity {capacity}, watermark {watermark}")
        used = self.capacity - self.free_blocks
        if capacity < used:
            raise AllocationError(f"cannot resize to {capacity} blocks: {used} are in use")
        delta = capacity - self.capacity
        self.capacity = capacity
        self.free_blocks += delta
        self.watermark = min(self.watermark if watermark is None else watermark, capacity)
        return delta

    # --- moving a request's blocks to another allocator (a fused group's KV exchange) -------
    def move_to(self, other: "KVBlockAllocator", owner: Hashable) -> int:
        """Move ``owner``'s GPU blocks from this allocator to ``other``; returns how many.

        One block count leaves here and the same count arrives there, or nothing changes:
        ``other`` must have them free (the watermark may be used: they are a running
        request's), else AllocationError before either side is touched. Host copies and
        reservations stay where they are.
        """
        blocks = self._owned.get(owner, 0)
        if other is self:
            return blocks
        if not other.can_allocate(blocks, respect_watermark=False):
            raise AllocationError(f"cannot move {blocks} blocks: {other.free_blocks} free there")
        self.free(owner)
        other.allocate(owner, blocks, respect_watermark=False)
        return blocks

    # --- checks ------------------------------------------------------------------------------
    def check_invariants(self) -> None:
        """Raise AllocationError unless every block is free or held exactly once."""
        owned = sum(self._owned.values())
        reserved = sum(self._reserved.values())
        swapped = sum(self._swapped.values())
        if not 0 <= self.free_blocks <= self.capacity:
            raise AllocationError(f"free={self.free_blocks} outside [0, {self.capacity}]")
        if self.free_blocks + owned + reserved != self.capacity:
            raise AllocationError(
                f"free {self.free_blocks} + owned {owned} + reserved {reserved} != {self.capacity}"
            )
        if not 0 <= self.host_free_blocks <= self.host_capacity:
            raise AllocationError(f"host free={self.host_free_blocks} outside bounds")
        if self.host_free_blocks + swapped != self.host_capacity:
            raise AllocationError("host blocks do not balance")
        if any(v <= 0 for d in (self._owned, self._reserved, self._swapped) for v in d.values()):
            raise AllocationError("an owner holds a non-positive count")

    @staticmethod
    def _set(table: dict[Hashable, int], key: Hashable, value: int) -> None:
        if value:
            table[key] = value
        else:
            table.pop(key, None)
