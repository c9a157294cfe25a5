"""Eviction of lower-priority work for a higher-priority arrival (Chiron's mixed instances).

When the head of an instance's waiting queue cannot be admitted (no seat, or no KV above the
watermark), running requests of lower priority are detached, latest-arrived first, until it
can. A decoding victim keeps its KV in this instance's host memory when there is room, so it
resumes without recomputing wherever it is placed next; a victim mid-prefill (or with no
host room) recomputes. Victims go back to the cluster to be placed again (Chiron: its global
queue), but only after this boundary's admission (:meth:`Instance.place_after_admission`):
handed back at once, a victim could be placed on this same instance, where its saved KV makes
it a swapped request that comes back before anything is admitted, so it would retake the seat
it was evicted from, be evicted again at the next boundary, and so on forever (with
``max_num_seqs: 1`` and no cluster queue, the run never progressed). The PCIe time of the
saved KV is part of this iteration.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from chironsim.sim.events import EVICT
from chironsim.sim.request import Request

if TYPE_CHECKING:
    from chironsim.sim.instance import Instance


class PriorityEviction:
    """A boundary mechanism; one object serves every instance it is attached to."""

    def __init__(self, requeue: Callable[[Request], None]) -> None:
        self.requeue = requeue

    def at_boundary(self, inst: "Instance", step: int) -> float:
        if inst.has_swapped:  # preempted work comes back first; nothing new is admitted
            return 0.0
        saved = 0
        while True:
            head = inst.waiting_head()
            if head is None or inst.can_admit(head):
                break
            running = [r for r in inst.running_requests() if r.priority > head.priority]
            if not running:
                break
            victim = max(running, key=Request.sort_key)
            victim.evictions += 1
            saved += inst.detach(victim, save_kv=True)
            inst.host.log_event(EVICT, inst, victim,
                                f"for request {head.request_id} ({head.request_class})")
            inst.place_after_admission(victim, self.requeue)
        return saved * inst.swap_seconds_per_block
