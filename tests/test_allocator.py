"""KV block allocator: random operation sequences never break its invariants."""

from __future__ import annotations

import hypothesis.strategies as st
import pytest
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from chironsim.sim.allocator import AllocationError, KVBlockAllocator

OWNERS = st.integers(min_value=0, max_value=7)


class AllocatorMachine(RuleBasedStateMachine):
    """Drives the allocator and a plain model of it side by side."""

    def __init__(self) -> None:
        super().__init__()
        self.alloc = KVBlockAllocator(capacity=64, watermark=4, host_capacity=32)
        self.owned: dict[int, int] = {}
        self.reserved: dict[int, int] = {}
        self.swapped: dict[int, int] = {}
        self.capacity = 64
        self.watermark = 4

    def _free(self) -> int:
        return self.capacity - sum(self.owned.values()) - sum(self.reserved.values())

    @rule(owner=OWNERS, blocks=st.integers(0, 20))
    def allocate(self, owner: int, blocks: int) -> None:
        if self._free() - blocks >= self.watermark:
            self.alloc.allocate(owner, blocks)
            if blocks:
                self.owned[owner] = self.owned.get(owner, 0) + blocks
        else:
            with pytest.raises(AllocationError):
                self.alloc.allocate(owner, blocks)

    @rule(owner=OWNERS, blocks=st.integers(1, 6))
    def append(self, owner: int, blocks: int) -> None:
        if self._free() >= blocks:
            self.alloc.append(owner, blocks)
            self.owned[owner] = self.owned.get(owner, 0) + blocks
        else:
            with pytest.raises(AllocationError):
                self.alloc.append(owner, blocks)

    @rule(owner=OWNERS)
    def free(self, owner: int) -> None:
        assert self.alloc.free(owner) == self.owned.pop(owner, 0)

    @rule(src=OWNERS, dst=OWNERS, blocks=st.integers(0, 8))
    def transfer(self, src: int, dst: int, blocks: int) -> None:
        if blocks <= self.owned.get(src, 0):
            self.alloc.transfer(src, dst, blocks)
            self.owned[src] = self.owned.get(src, 0) - blocks
            self.owned[dst] = self.owned.get(dst, 0) + blocks
            self.owned = {k: v for k, v in self.owned.items() if v}
        else:
            with pytest.raises(AllocationError):
                self.alloc.transfer(src, dst, blocks)

    @precondition(lambda self: self.owned)
    @rule(data=st.data())
    def swap_out(self, data: st.DataObject) -> None:
        owner = data.draw(st.sampled_from(sorted(self.owned)))
        blocks = self.owned[owner]
        host_free = 32 - sum(self.swapped.values())
        if blocks <= host_free:
            assert self.alloc.swap_out(owner) == blocks
            del self.owned[owner]
            self.swapped[owner] = self.swapped.get(owner, 0) + blocks
        else:
            assert not self.alloc.can_swap_out(owner)
            with pytest.raises(AllocationError):
                self.alloc.swap_out(owner)

    @precondition(lambda self: self.swapped)
    @rule(data=st.data())
    def swap_in(self, data: st.DataObject) -> None:
        owner = data.draw(st.sampled_from(sorted(self.swapped)))
        blocks = self.swapped[owner]
        if self._free() - blocks >= self.watermark:
            assert self.alloc.swap_in(owner) == blocks
            del self.swapped[owner]
            self.owned[owner] = self.owned.get(owner, 0) + blocks
        else:
            with pytest.raises(AllocationError):
                self.alloc.swap_in(owner)

    @precondition(lambda self: self.swapped)
    @rule(data=st.data())
    def drop_swapped(self, data: st.DataObject) -> None:
        owner = data.draw(st.sampled_from(sorted(self.swapped)))
        assert self.alloc.drop_swapped(owner) == self.swapped.pop(owner)

    @rule(owner=OWNERS, blocks=st.integers(0, 10))
    def reserve(self, owner: int, blocks: int) -> None:
        if self._free() >= blocks:
            self.alloc.reserve(owner, blocks)
            if blocks:
                self.reserved[owner] = self.reserved.get(owner, 0) + blocks
        else:
            with pytest.raises(AllocationError):
                self.alloc.reserve(owner, blocks)

    @rule(owner=OWNERS, commit=st.booleans())
    def settle_reservation(self, owner: int, commit: bool) -> None:
        blocks = self.reserved.pop(owner, 0)
        if commit:
            assert self.alloc.commit_reservation(owner) == blocks
            if blocks:
                self.owned[owner] = self.owned.get(owner, 0) + blocks
        else:
            assert self.alloc.cancel_reservation(owner) == blocks

    @rule(capacity=st.integers(0, 160), watermark=st.one_of(st.none(), st.integers(0, 10)))
    def resize(self, capacity: int, watermark: int | None) -> None:
        """A fused group's drop grows the capacity, its restore shrinks it back."""
        used = sum(self.owned.values()) + sum(self.reserved.values())
        if capacity >= used:
            assert self.alloc.resize(capacity, watermark) == capacity - self.capacity
            self.capacity = capacity
            self.watermark = min(self.watermark if watermark is None else watermark, capacity)
        else:
            with pytest.raises(AllocationError):
                self.alloc.resize(capacity, watermark)

    @invariant()
    def balances(self) -> None:
        self.alloc.check_invariants()
        assert 0 <= self.alloc.free_blocks <= self.alloc.capacity
        assert self.alloc.free_blocks == self._free()
        assert self.alloc.capacity == self.capacity and self.alloc.watermark == self.watermark
        for owner in range(8):
            assert self.alloc.owned(owner) == self.owned.get(owner, 0)
            assert self.alloc.reserved(owner) == self.reserved.get(owner, 0)
            assert self.alloc.swapped(owner) == self.swapped.get(owner, 0)
        assert self.alloc.host_free_blocks == 32 - sum(self.swapped.values())


TestAllocator = AllocatorMachine.TestCase
TestAllocator.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)


def test_invariant_check_detects_corruption() -> None:
    alloc = KVBlockAllocator(capacity=10)
    alloc.allocate("a", 3)
    alloc.free_blocks += 1  # simulate a leak
    with pytest.raises(AllocationError):
        alloc.check_invariants()


def test_resize_keeps_every_owner_and_refuses_to_drop_used_blocks() -> None:
    alloc = KVBlockAllocator(capacity=10, watermark=1)
    alloc.allocate("a", 4)
    alloc.reserve("m", 2)
    assert alloc.resize(25) == 15
    assert (alloc.capacity, alloc.free_blocks, alloc.owned("a"), alloc.reserved("m")) == (25, 19, 4, 2)
    with pytest.raises(AllocationError):
        alloc.resize(5)  # 6 blocks in use
    assert (alloc.capacity, alloc.free_blocks) == (25, 19)  # unchanged by the refusal
    assert alloc.resize(6, watermark=0) == -19
    assert alloc.free_blocks == 0 and alloc.watermark == 0
    alloc.check_invariants()
