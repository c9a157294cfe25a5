"""The local scheduler: which requests the next iteration runs (vLLM's order, DESIGN §2).

Two batching policies, chosen per engine (``engine.scheduler``, default the preset's;
:func:`make_scheduler`), built from the same steps:

``chunked`` (:class:`LocalScheduler`, the default). At each iteration boundary, in this order:
pull queued cluster work the instance has room for; swap preempted requests back in (before
anything new); let running decodes claim the blocks they grow into, preempting the
lowest-priority, latest-arrived request until the growth fits; run the instance's boundary
mechanisms (e.g. eviction for a higher-priority head, later migration), which may detach
requests through the public instance API; continue partial prefills; admit waiting requests
by priority then FCFS while seats, the token budget and KV blocks above the watermark allow,
splitting a prompt that does not fit the budget left into chunks; last, hand back to the
cluster the requests a mechanism detached to make room (so they cannot take that room back
ahead of the request it was made for). Decodes and prefill chunks share every iteration.

``prefill_first`` (:class:`PrefillFirstScheduler`): vLLM's scheduler before chunked prefill,
the one Vidur's vLLM scheduler models, and SGLang's default. An iteration is either
prefill-only or decode-only, never both. At each boundary: pull queued cluster work; the
decodes sat out of the previous (prefill-only) iteration rejoin the batch; run the boundary
mechanisms (nothing is claimed yet, so they see what a prefill iteration would need); then,
unless preempted requests wait to be swapped in, form a prefill-only iteration: partial
prefills continue, and waiting requests are admitted by priority then FCFS with their *whole*
prompt while seats, the token budget (``max_num_batched_tokens``, decodes not counted) and
KV blocks allow; the head of the queue blocks the rest when it does not fit. If anything was
admitted or continues, that is the iteration: every running decode sits it out (it keeps its
KV, gains no token and grows no block; its next token's gap includes the wait). Otherwise the
iteration is decode-only: swap-ins, then decode growth with preemption, as ``chunked``.

A prompt longer than ``max_num_batched_tokens`` can never fit whole. Rule: it is admitted only
as the first prefill of an iteration and is prefilled in budget-sized chunks over consecutive
prefill-only iterations (decodes wait throughout, as they wait for any prefill), so no
iteration ever exceeds the budget. (vLLM's V0 scheduler instead refuses such configs:
``max_num_batched_tokens`` must be at least ``max_model_len`` without chunked prefill; set it
so and the rule never applies. SGLang chunks such prompts the same way.)

A new mechanism plugs in as a boundary mechanism and never edits this module.
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


def make_scheduler(instance: "Instance") -> "LocalScheduler":
    """The scheduler of ``instance``'s batching policy (``engine.batching``)."""
    if instance.engine.batching == "prefill_first":
        return PrefillFirstScheduler(instance)
    return LocalScheduler(instance)


class LocalScheduler:
    """Decides one iteration's batch on ``instance``'s queues and KV cache: chunked prefill,
    decodes and prefill chunks in the same iteration."""

    def __init__(self, instance: "Instance") -> None:
        self.inst = instance
        #: Decodes sat out of the last iteration (prefill_first): they wait in the instance's
        #: ``arriving`` queue, still counted as running, and rejoin at the next boundary.
        self.held: set[int] = set()

    def schedule(self, step: int) -> Batch:
        inst = self.inst
        if inst.host.backlog and inst.state == READY:
            inst.host.refill(inst)
        resumed: list[Request] = []
        # Swapped requests come back before anything new is admitted (vLLM order).
        transfer_seconds = self.swap_in(step, resumed, 0.0)
        # Requests whose KV a migration delivered join the batch as they are.
        self.join_arriving(step, resumed)
        # Running decodes grow; preempt until the growth fits.
        transfer_seconds, growth = self.grow_decodes(step, transfer_seconds)
        if inst.mechanisms:
            transfer_seconds, growth = self.run_mechanisms(step, growth, transfer_seconds)
        chunks: list[tuple[Request, int]] = []
        budget = self.continue_prefills(chunks, inst.max_batched_tokens - len(inst.decodes))
        if not inst.swapped:
            self.admit(chunks, budget, whole_prompts=False)
        if inst.handed_back:
            inst.hand_back_detached()
        return chunks, resumed, transfer_seconds, growth

    # --- the steps both policies are built from ---------------------------------------------
    def swap_in(self, step: int, resumed: list[Request], transfer_seconds: float) -> float:
        """Swapped (or saved-elsewhere) requests back into the decode batch while seats and KV
        blocks (with one block of growth each) allow; returns ``transfer_seconds`` plus theirs."""
        inst = self.inst
        kv = inst.kv
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
        return transfer_seconds

    def join_arriving(self, step: int, resumed: list[Request]) -> None:
        """Requests waiting to join the decode batch with their KV already here: migrated in
        (they become running now) or sat out of the last iteration (they still are)."""
        inst = self.inst
        held = self.held
        while inst.arriving:
            req = inst.arriving.popleft()
            inst.join_decode(req, step)
            if held and req.request_id in held:
                held.discard(req.request_id)
            else:
                inst.running_add(req)
            resumed.append(req)

    def grow_decodes(self, step: int, transfer_seconds: float) -> tuple[float, int]:
        """Claim the blocks the running decodes grow into in iteration ``step``, preempting
        until they fit; returns ``transfer_seconds`` plus the swap-outs', and the blocks."""
        inst = self.inst
        kv = inst.kv
        decodes = inst.decodes
        growth = decodes.growth_at(step)
        while growth > kv.free_blocks:
            transfer_seconds += self._preempt_one(step) * inst.swap_seconds_per_block
            growth = decodes.growth_at(step)
        if growth:  # claimed before admissions so they cannot take these blocks
            kv.append(GROWTH, growth)
        return transfer_seconds, growth

    def run_mechanisms(self, step: int, growth: int, transfer_seconds: float) -> tuple[float, int]:
        """The instance's boundary mechanisms, in order; returns ``transfer_seconds`` plus
        theirs and the decode growth left claimed."""
        inst = self.inst
        inst.boundary_growth = growth
        for mechanism in inst.mechanisms:
            transfer_seconds += mechanism.at_boundary(inst, step)
        # Decodes a mechanism detached no longer grow in this iteration: give back their
        # blocks (unless the mechanism already did, Instance.settle_growth).
        inst.settle_growth()
        return transfer_seconds, inst.boundary_growth

    def continue_prefills(self, chunks: list[tuple[Request, int]], budget: int) -> int:
        """The next chunk of each partial prefill, in admission order, within ``budget``;
        returns the budget left."""
        for req in self.inst.prefilling:
            if budget <= 0:
                break
            n = min(req.prefill_target - req.prefilled, budget)
            chunks.append((req, n))
            budget -= n
        return budget

    def admit(self, chunks: list[tuple[Request, int]], budget: int, whole_prompts: bool) -> None:
        """Admit waiting requests by priority then FCFS while seats, ``budget`` and KV blocks
        above the watermark allow, each with its first chunk. ``whole_prompts``: a prompt must
        fit the budget left whole, except one longer than the whole budget, which may start
        an iteration of its own (module docstring); otherwise a prompt is cut to the budget."""
        inst = self.inst
        kv = inst.kv
        block_size = inst.block_size
        while inst.waiting and budget > 0 and inst.seats_left() > 0:
            req = inst.waiting[0][1]
            target = req.prefill_target
            if whole_prompts and target > budget and (chunks or target <= inst.max_batched_tokens):
                break
            need = -(-target // block_size)
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
            n = min(target, budget)
            chunks.append((req, n))
            budget -= n

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


class PrefillFirstScheduler(LocalScheduler):
    """Prefill-only iterations first, decode-only iterations otherwise, never mixed (module
    docstring, ``prefill_first``)."""

    def schedule(self, step: int) -> Batch:
        inst = self.inst
        if inst.host.backlog and inst.state == READY:
            inst.host.refill(inst)
        resumed: list[Request] = []
        # Decodes sat out of the last iteration, and migrated-in requests, are running again,
        # so the mechanisms below see (and may move or evict) them.
        self.join_arriving(step, resumed)
        transfer_seconds = 0.0
        if inst.mechanisms:
            transfer_seconds, _ = self.run_mechanisms(step, 0, transfer_seconds)
        if not inst.swapped:
            chunks: list[tuple[Request, int]] = []
            budget = self.continue_prefills(chunks, inst.max_batched_tokens)
            self.admit(chunks, budget, whole_prompts=True)
            if chunks:
                self._sit_out_decodes(step)
                if inst.handed_back:
                    inst.hand_back_detached()
                return chunks, [], transfer_seconds, 0
        transfer_seconds = self.swap_in(step, resumed, transfer_seconds)
        transfer_seconds, growth = self.grow_decodes(step, transfer_seconds)
        if inst.handed_back:
            inst.hand_back_detached()
        if self._could_admit():
            # The admission check ran before this boundary's preemptions: one that freed room
            # (recompute) lets the next boundary start a prefill, so this decode iteration is
            # not extended into a stretch (fast-forward must change nothing).
            inst.planner.one_iteration = True
        return [], resumed, transfer_seconds, growth

    def _could_admit(self) -> bool:
        """Whether the head of the waiting queue would be admitted at a boundary now: what the
        next boundary decides first, with the KV blocks this one left free."""
        inst = self.inst
        if inst.swapped or not inst.waiting or inst.seats_left() <= 0:
            return False
        target = inst.waiting[0][1].prefill_target
        return inst.kv.can_allocate(-(-target // inst.block_size))

    def _sit_out_decodes(self, step: int) -> None:
        """Take every running decode out of the batch for one prefill-only iteration: its
        tokens and ITL so far are settled, its KV stays, and it waits in ``arriving`` (still
        running in every view) to rejoin at the next boundary."""
        inst = self.inst
        held = self.held
        for req in list(inst.decodes.members.values()):
            inst.leave_decode(req, step)
            req.phase = rq.SWAPPED  # off every queue until it rejoins, as a migrated-in request
            inst.arriving.append(req)
            held.add(req.request_id)
