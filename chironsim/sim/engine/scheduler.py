"""The local scheduler: which requests the next iteration runs (vLLM's order, DESIGN §2).

At each iteration boundary, in this order: pull queued cluster work the instance has room
for; swap preempted requests back in (before anything new); let running decodes claim the
blocks they grow into, preempting the lowest-priority, latest-arrived request until the
growth fits; run the instance's boundary mechanisms (e.g. eviction for a higher-priority
head, later migration), which may detach requests through the public instance API; continue
partial prefills; admit waiting requests by priority then FCFS while seats, the token budget
and KV blocks above the watermark allow; last, hand back to the cluster the requests a
mechanism detached to make room (so they cannot take that room back ahead of the request it
was made for). A new mechanism plugs in as a boundary mechanism and never edits this module.
"""

from __future__ import annotations

import heapq
from typing import TYPE_CHECKING

from chironsim.contract.states import READY
from chironsim.sim import request as rq
from chironsim.sim.engine.stretch import GROWTH
from chironsim.sim.events import PREEMPT, SWAP_IN, SWAP_OUT
from chironsim.sim.request import Request

if TYPE_CHECKING:
    from chironsim.sim.instance import Instance

#: What the scheduler chose: prefill chunks, resumed requests, KV transfer seconds, and the
#: decode growth blocks claimed for this iteration.
Batch = tuple[list[tuple[Request, int]], list[Request], float, int]


class LocalScheduler:
    """Decides one iteration's batch on ``instance``'s queues and KV cache."""

    def __init__(self, instance: "Instance") -> None:
        self.inst = instance

    def schedule(self, step: int) -> Batch:
        inst = self.inst
        kv = inst.kv
        decodes = inst.decodes
        if inst.host.backlog and inst.state == READY:
            inst.host.refill(inst)
        transfer_seconds = 0.0
        resumed: list[Request] = []
        # Swapped requests come back before anything new is admitted (vLLM order).
        while inst.swapped and inst.seats_left() > 0:
            req = inst.swapped[0][1]
            remote = req.restore_remote
            blocks = req.saved_blocks if remote else kv.swapped(req.request_id)
            if not kv.can_allocate(blocks + 1):
                break
            heapq.heappop(inst.swapped)
            inst.pending_blocks -= blocks
            if remote:
                kv.allocate(req.request_id, blocks)
                transfer_seconds += blocks * inst.remote_seconds_per_block
                req.restore_remote = False
            else:
                kv.swap_in(req.request_id)
                transfer_seconds += blocks * inst.swap_seconds_per_block
            inst.join_decode(req, step)
            inst.running_add(req)
            resumed.append(req)
            inst.host.log_event(SWAP_IN, inst, req, f"{blocks} blocks" + (" (moved)" if remote else ""))
        # Requests whose KV a migration delivered join the batch as they are.
        while inst.arriving:
            req = inst.arriving.popleft()
            inst.join_decode(req, step)
            inst.running_add(req)
            resumed.append(req)
        # Running decodes grow; preempt until the growth fits.
        growth = decodes.growth_at(step)
        while growth > kv.free_blocks:
            transfer_seconds += self._preempt_one(step) * inst.swap_seconds_per_block
            growth = decodes.growth_at(step)
        if growth:  # claimed before admissions so they cannot take these blocks
            kv.append(GROWTH, growth)
        if inst.mechanisms:
            inst.boundary_growth = growth
            for mechanism in inst.mechanisms:
                transfer_seconds += mechanism.at_boundary(inst, step)
            # Decodes a mechanism detached no longer grow in this iteration: give back their
            # blocks (unless the mechanism already did, Instance.settle_growth).
            inst.settle_growth()
            growth = inst.boundary_growth
        budget = inst.max_batched_tokens - len(decodes)
        chunks: list[tuple[Request, int]] = []
        for req in inst.prefilling:
            if budget <= 0:
                break
            n = min(req.prefill_target - req.prefilled, budget)
            chunks.append((req, n))
            budget -= n
        if not inst.swapped:
            block_size = inst.block_size
            while inst.waiting and budget > 0 and inst.seats_left() > 0:
                req = inst.waiting[0][1]
                need = -(-req.prefill_target // block_size)
                if not kv.can_allocate(need):
                    break
                heapq.heappop(inst.waiting)
                inst.left_waiting(req)
                inst.pending_blocks -= need
                inst.running_add(req)
                kv.allocate(req.request_id, need)
                req.phase = rq.PREFILLING
                if req.admit_time != req.admit_time:  # nan: first admission anywhere
                    req.admit_time = inst.clock
                req.prefilled = 0
                inst.prefilling.append(req)
                n = min(req.prefill_target, budget)
                chunks.append((req, n))
                budget -= n
        if inst.handed_back:
            inst.hand_back_detached()
        return chunks, resumed, transfer_seconds, growth

    def _preempt_one(self, step: int) -> int:
        """Preempt the lowest-priority, latest-arrived running request (the latest arrived
        when priority scheduling is off); returns blocks swapped."""
        inst = self.inst
        victim = inst.decodes.lowest_priority(inst.order)
        candidates = [r for r in (victim, *inst.prefilling) if r is not None]
        victim = max(candidates, key=inst.order)
        victim.preemptions += 1
        inst.running_remove(victim)
        if victim.phase == rq.DECODING:
            inst.leave_decode(victim, step)
            if inst.preempt_by_swap and inst.kv.can_swap_out(victim.request_id):
                blocks = inst.kv.swap_out(victim.request_id)
                victim.phase = rq.SWAPPED
                inst.pending_blocks += blocks
                heapq.heappush(inst.swapped, (inst.order(victim), victim))
                inst.host.log_event(SWAP_OUT, inst, victim, f"{blocks} blocks")
                return blocks
        else:
            inst.prefilling.remove(victim)
        inst.kv.free(victim.request_id)
        victim.prefill_target = victim.prompt_tokens + victim.generated
        victim.prefilled = 0
        victim.phase = rq.WAITING
        inst.push_waiting(victim)
        inst.host.log_event(PREEMPT, inst, victim, "recompute: no free KV block")
        return 0
