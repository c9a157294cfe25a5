"""One serving instance: a vLLM-style engine loop with continuous batching and chunked prefill.

Each iteration (DESIGN §2): running decodes grow by one token (preempting the lowest-priority,
latest-arrived request when no block is free); swapped requests come back first; partial
prefills continue; waiting requests are admitted by class priority then FCFS while seats, the
token budget and KV blocks above the watermark allow. The iteration's duration comes from the
roofline model.

Speed: while an instance only decodes and nothing can be admitted, consecutive iterations
differ only by their growing context, so the loop plans a *stretch* of them at once (their
durations in one vectorised call, their block needs from :class:`DecodeSet`'s histogram) and
sleeps until its end or until something wakes it (an arrival, a policy change), in which case
it stops at the end of the iteration in progress. Times are accumulated exactly as stepping
one iteration at a time would accumulate them, so ``fast_forward`` changes speed, not results.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import simpy

from chironsim.contract.states import DRAINING, LOADING, PROVISIONING, READY, STOPPED
from chironsim.contract.views import InstanceView
from chironsim.sim import request as rq
from chironsim.sim.allocator import KVBlockAllocator
from chironsim.sim.decode_set import DecodeSet, RunningMax
from chironsim.sim.events import EVICT, PREEMPT, SWAP_IN, SWAP_OUT, EventKind
from chironsim.sim.request import Request

if TYPE_CHECKING:
    from chironsim.sim.config import EngineConfig

#: Longest stretch planned at once; a cap on array sizes, not on correctness.
MAX_STRETCH = 2048
#: Pooled owner key for decode growth not yet attributed to a request.
GROWTH = "__decode_growth__"


@dataclass(slots=True)
class _Stretch:
    """Iterations planned from ``start_step``; ``k`` may shrink when the instance is woken."""

    start_step: int
    start_time: float
    ends: np.ndarray          # end time of each iteration
    durations: np.ndarray
    growth_cum: np.ndarray    # cumulative new decode blocks up to each iteration
    k: int
    decodes: int
    prefill_chunks: list[tuple[Request, int]]
    resumed: list[Request]
    pure_decode: bool         # no prefill chunk and no KV transfer in these iterations


def _add_in_order(total: float, values: np.ndarray) -> float:
    """``total + v0 + v1 + …`` left to right, as stepping one iteration at a time would add.

    ``np.sum`` adds pairwise, which differs in the last bits; ``cumsum`` is sequential.
    """
    if len(values) == 0:
        return total
    return float(np.cumsum(np.concatenate(([total], values)))[-1])


class InstanceHost:
    """What an instance reports to: the cluster. Defined as a base for type clarity."""

    def request_done(self, req: Request, status: str, reason: str = "") -> None: ...
    def log_event(self, kind: EventKind, instance: "Instance", req: Request | None, reason: str) -> None: ...
    def instance_stopped(self, instance: "Instance") -> None: ...
    def request_evicted(self, req: Request) -> None: ...
    def refill(self, instance: "Instance") -> None: ...

    #: Requests waiting in cluster-level queues; instances ask for a refill only when non-zero.
    backlog: int = 0


class Instance:
    """A model replica on ``tp`` GPUs with its own waiting queue and KV cache."""

    def __init__(
        self,
        env: simpy.Environment,
        host: InstanceHost,
        instance_id: str,
        pool: str,
        engine: "EngineConfig",
        iteration_time: Callable,
        kv_capacity_blocks: int,
        host_capacity_blocks: int,
        swap_seconds_per_block: float,
        max_context: int,
        tp: int,
        *,
        evict_lower_priority: bool = False,
        remote_seconds_per_block: float | None = None,
    ) -> None:
        self.env = env
        self.host = host
        self.instance_id = instance_id
        self.pool = pool
        self.engine = engine
        self.tp = tp
        self._iteration_time = iteration_time
        self.block_size = engine.block_size
        self.max_num_seqs = engine.max_num_seqs
        self.max_batched_tokens = engine.max_num_batched_tokens
        self.max_context = max_context
        self.swap_seconds_per_block = swap_seconds_per_block
        self.preempt_by_swap = engine.preemption_mode == "swap"
        self.evict_lower_priority = evict_lower_priority
        # Restoring KV saved on another instance's host: network, then PCIe on this side.
        self.remote_seconds_per_block = (swap_seconds_per_block if remote_seconds_per_block is None
                                         else remote_seconds_per_block)
        watermark = int(engine.watermark * kv_capacity_blocks)
        self.kv = KVBlockAllocator(kv_capacity_blocks, watermark, host_capacity_blocks)
        self.decodes = DecodeSet(self.block_size)
        self.itl_window = RunningMax()
        self.waiting: list[tuple[tuple[int, float, int], Request]] = []
        self.swapped: list[tuple[tuple[int, float, int], Request]] = []
        self.prefilling: deque[Request] = deque()
        self.state = PROVISIONING
        self.step = 0
        self.clock = env.now
        self.tokens_generated = 0
        self.tokens_prefilled = 0
        self.requests_finished = 0
        self.busy_seconds = 0.0
        self.decode_iterations = 0
        self.decode_seconds = 0.0
        self.pure_decode_iterations = 0
        self.pure_decode_seconds = 0.0
        self.running_by_class: dict[str, int] = {}
        # KV blocks that queued requests (waiting prompts, swapped/saved KV) will claim.
        self.pending_blocks = 0
        self.provision_time = env.now
        self.ready_time = math.nan
        self.drain_time = math.nan
        self.stop_time = math.nan
        self._stretch: _Stretch | None = None
        self._wake: simpy.Event | None = None

    # --- lifecycle ------------------------------------------------------------------------
    def set_loading(self) -> None:
        self.state = LOADING

    def start(self) -> None:
        """Become ready and start the engine loop."""
        self.state = READY
        self.ready_time = self.env.now
        self.clock = self.env.now
        self.env.process(self._run())

    def drain(self) -> None:
        """Accept nothing new; stop once every held request is done."""
        if self.state in (DRAINING, STOPPED):
            return
        was_running = self.state == READY
        self.state = DRAINING
        self.drain_time = self.env.now
        if not was_running:  # never became ready: nothing to finish
            self._stop()
        else:
            self.wake()

    def _stop(self) -> None:
        self.state = STOPPED
        self.stop_time = self.env.now
        self.host.instance_stopped(self)

    # --- requests -------------------------------------------------------------------------
    def enqueue(self, req: Request) -> None:
        """Add an arriving request to the waiting queue (rejecting what can never fit).

        A request evicted elsewhere with its KV saved in host memory resumes without
        recomputing: from this instance's own host memory over PCIe, or moved from the other
        instance's host over the network. If that instance is gone, the KV is lost and the
        request recomputes its prompt and generated tokens.
        """
        total = req.prompt_tokens + req.output_tokens
        if total > self.max_context:
            self.host.request_done(req, "rejected", f"{total} tokens exceed max context {self.max_context}")
            return
        usable = self.kv.capacity - self.kv.watermark
        if -(-total // self.block_size) > usable:
            self.host.request_done(req, "rejected", f"{total} tokens exceed KV capacity of {usable} blocks")
            return
        req.instance = self
        req.instances.append(self.instance_id)
        home = req.kv_home
        if home is not None:
            req.kv_home = None
            saved = home.kv.swapped(req.request_id) if home.state != STOPPED else 0
            if saved:
                if home is not self:
                    home.kv.drop_swapped(req.request_id)
                req.saved_blocks = saved
                req.restore_remote = home is not self
                req.phase = rq.SWAPPED
                self.pending_blocks += saved
                heapq.heappush(self.swapped, (req.sort_key(), req))
                self.wake()
                return
            req.prefill_target = req.prompt_tokens + req.generated
        req.phase = rq.WAITING
        self._push_waiting(req)
        self.wake()

    def room_for(self, req: Request) -> bool:
        """Whether pulling ``req`` from a cluster queue would let it start soon: a free seat
        counting what already waits here, and KV for its prompt above the watermark."""
        if self.state != READY:
            return False
        if self.held_count >= self.max_num_seqs:
            return False
        need = self.pending_blocks + -(-(req.prompt_tokens + req.generated) // self.block_size)
        return self.kv.free_blocks - need >= self.kv.watermark

    def _push_waiting(self, req: Request) -> None:
        self.pending_blocks += -(-req.prefill_target // self.block_size)
        heapq.heappush(self.waiting, (req.sort_key(), req))

    def set_max_num_seqs(self, value: int) -> None:
        self.max_num_seqs = max(1, int(value))
        self.wake()

    def wake(self) -> None:
        """Something changed that may alter the next iteration."""
        if self._wake is not None and not self._wake.triggered:
            self._wake.succeed()

    @property
    def has_work(self) -> bool:
        return bool(self.decodes.members or self.prefilling or self.waiting or self.swapped)

    # --- the engine loop ------------------------------------------------------------------
    def _run(self):
        env = self.env
        while True:
            plan = self._plan()
            if plan is None:
                if self.state == DRAINING and not self.has_work:
                    self._stop()
                    return
                self._wake = env.event()
                yield self._wake
                self._wake = None
                self.clock = env.now
                continue
            self._stretch = plan
            if plan.k > 1:
                self._wake = env.event()
                timer = env.timeout(max(0.0, float(plan.ends[plan.k - 1]) - env.now))
                yield timer | self._wake
                self._wake = None
                if env.now < float(plan.ends[plan.k - 1]):
                    # Woken mid-stretch: finish the iteration in progress, then re-plan.
                    plan.k = min(plan.k, int(np.searchsorted(plan.ends, env.now, side="left")) + 1)
            end = float(plan.ends[plan.k - 1])
            if end > env.now:
                yield env.timeout(end - env.now)
            self._commit(plan)
            self._stretch = None

    def _plan(self) -> _Stretch | None:
        """Decide the next iteration(s): admissions, growth, preemptions; None when idle."""
        step = self.step
        if self.host.backlog and self.state == READY:
            self.host.refill(self)
        transfer_seconds = 0.0
        resumed: list[Request] = []
        # Swapped requests come back before anything new is admitted (vLLM order).
        while self.swapped and self._seats_left() > 0:
            req = self.swapped[0][1]
            remote = req.restore_remote
            blocks = req.saved_blocks if remote else self.kv.swapped(req.request_id)
            if not self.kv.can_allocate(blocks + 1):
                break
            heapq.heappop(self.swapped)
            self.pending_blocks -= blocks
            if remote:
                self.kv.allocate(req.request_id, blocks)
                transfer_seconds += blocks * self.remote_seconds_per_block
                req.restore_remote = False
            else:
                self.kv.swap_in(req.request_id)
                transfer_seconds += blocks * self.swap_seconds_per_block
            self._join_decode(req, step)
            self._running_add(req)
            resumed.append(req)
            self.host.log_event(SWAP_IN, self, req, f"{blocks} blocks" + (" (moved)" if remote else ""))
        # Running decodes grow; preempt until the growth fits.
        growth = self.decodes.growth_at(step)
        while growth > self.kv.free_blocks:
            transfer_seconds += self._preempt_one(step) * self.swap_seconds_per_block
            growth = self.decodes.growth_at(step)
        if growth:  # claimed before admissions so they cannot take these blocks
            self.kv.append(GROWTH, growth)
        if self.evict_lower_priority and not self.swapped:
            transfer_seconds += self._evict_for_head(step) * self.swap_seconds_per_block
            # Evicted decodes no longer grow in this iteration: give back their new blocks.
            surplus = growth - self.decodes.growth_at(step)
            if surplus:
                self._release_growth(surplus)
                growth -= surplus
        budget = self.max_batched_tokens - len(self.decodes)
        chunks: list[tuple[Request, int]] = []
        for req in self.prefilling:
            if budget <= 0:
                break
            n = min(req.prefill_target - req.prefilled, budget)
            chunks.append((req, n))
            budget -= n
        if not self.swapped:
            while self.waiting and budget > 0 and self._seats_left() > 0:
                req = self.waiting[0][1]
                need = -(-req.prefill_target // self.block_size)
                if not self.kv.can_allocate(need):
                    break
                heapq.heappop(self.waiting)
                self.pending_blocks -= need
                self._running_add(req)
                self.kv.allocate(req.request_id, need)
                req.phase = rq.PREFILLING
                req.prefilled = 0
                self.prefilling.append(req)
                n = min(req.prefill_target, budget)
                chunks.append((req, n))
                budget -= n
        decodes = len(self.decodes)
        if not chunks and decodes == 0 and transfer_seconds == 0:
            return None
        if chunks or transfer_seconds or not self.engine.fast_forward:
            k = 1
        else:
            next_finish = self.decodes.next_finish_step()
            k = min(MAX_STRETCH, next_finish - step) if next_finish is not None else MAX_STRETCH
        growth_cum = np.cumsum(self.decodes.growth_schedule(step, k))
        if k > 1:
            # Later iterations of the stretch may only use blocks that are free now.
            k = max(1, int(np.searchsorted(growth_cum - growth, self.kv.free_blocks, side="right")))
            growth_cum = growth_cum[:k]
            extra = int(growth_cum[-1]) - growth
            if extra:
                self.kv.append(GROWTH, extra)
        ctx = self.decodes.context_sum(step)
        if k == 1:
            prefill_tokens = sum(n for _, n in chunks)
            attention = sum(n * (r.prefilled + n / 2) for r, n in chunks)
            duration = float(self._iteration_time(prefill_tokens, attention, decodes, ctx))
            duration += transfer_seconds
            durations = np.array([duration])
        else:
            contexts = ctx + decodes * np.arange(k)
            durations = np.asarray(self._iteration_time(0, 0.0, decodes, contexts), dtype=float)
        ends = np.cumsum(np.concatenate(([self.clock], durations)))[1:]
        return _Stretch(step, self.clock, ends, durations, growth_cum, k, decodes, chunks, resumed,
                        pure_decode=not chunks and transfer_seconds == 0)

    def _commit(self, plan: _Stretch) -> None:
        """Apply the effects of ``plan.k`` completed iterations."""
        k = plan.k
        unused = int(plan.growth_cum[-1] - plan.growth_cum[k - 1])
        if unused:
            self._release_growth(unused)
        now = float(plan.ends[k - 1])
        self.clock = now
        self.busy_seconds = _add_in_order(self.busy_seconds, plan.durations[:k])
        self.step = plan.start_step + k
        self.itl_window.push(self.step - 1, float(plan.durations[k - 1]))
        self.tokens_generated += plan.decodes * k
        if plan.decodes:
            self.decode_iterations += k
            self.decode_seconds = _add_in_order(self.decode_seconds, plan.durations[:k])
            if plan.pure_decode:
                self.pure_decode_iterations += k
                self.pure_decode_seconds = _add_in_order(self.pure_decode_seconds,
                                                         plan.durations[:k])
        first_end = float(plan.ends[0])
        for req in plan.resumed:
            if req.phase == rq.DECODING and req.join_step == plan.start_step:  # not re-preempted
                req.note_itl(first_end - req.last_token_time)
        for req, n in plan.prefill_chunks:
            req.prefilled += n
            self.tokens_prefilled += n
            if req.prefilled < req.prefill_target:
                continue
            self.prefilling.remove(req)
            self._emit_first_token(req, now)
        for req in self.decodes.pop_finished(self.step):
            self._attribute_growth(req, self.step)
            self._finish(req, now)

    # --- helpers --------------------------------------------------------------------------
    def _seats_left(self) -> int:
        return self.max_num_seqs - len(self.decodes) - len(self.prefilling)

    def _emit_first_token(self, req: Request, now: float) -> None:
        """A (re)prefill finished: it samples the next token."""
        req.generated += 1
        self.tokens_generated += 1
        if math.isnan(req.first_token_time):
            req.first_token_time = now
        else:
            req.note_itl(now - req.last_token_time)
        req.last_token_time = now
        if req.generated >= req.output_tokens:
            self._finish(req, now)
        else:
            self._join_decode(req, self.step)

    def _join_decode(self, req: Request, step: int) -> None:
        req.phase = rq.DECODING
        self.decodes.add(req, step)

    def _finish(self, req: Request, now: float) -> None:
        req.generated = req.output_tokens
        if req.output_tokens > 1 and req.join_step < self.step and req.phase == rq.DECODING:
            req.note_itl(self.itl_window.max_since(req.join_step))
        req.last_token_time = now
        req.finish_time = now
        req.phase = rq.DONE
        self._running_remove(req)
        self.kv.free(req.request_id)
        self.requests_finished += 1
        self.host.request_done(req, "finished")

    def _attribute_growth(self, req: Request, step: int) -> None:
        """Move the pooled growth blocks that belong to ``req`` into its own account."""
        share = self.decodes.blocks_held(req, step) - self.kv.owned(req.request_id)
        if share:
            self.kv.transfer(GROWTH, req.request_id, share)

    def _release_growth(self, blocks: int) -> None:
        self.kv.transfer(GROWTH, "__release__", blocks)
        self.kv.free("__release__")

    def _preempt_one(self, step: int) -> int:
        """Preempt the lowest-priority, latest-arrived running request; returns blocks swapped."""
        victim = self.decodes.lowest_priority()
        candidates = [r for r in (victim, *self.prefilling) if r is not None]
        victim = max(candidates, key=Request.sort_key)
        victim.preemptions += 1
        self._running_remove(victim)
        if victim.phase == rq.DECODING:
            self._leave_decode(victim, step)
            if self.preempt_by_swap and self.kv.can_swap_out(victim.request_id):
                blocks = self.kv.swap_out(victim.request_id)
                victim.phase = rq.SWAPPED
                self.pending_blocks += blocks
                heapq.heappush(self.swapped, (victim.sort_key(), victim))
                self.host.log_event(SWAP_OUT, self, victim, f"{blocks} blocks")
                return blocks
        else:
            self.prefilling.remove(victim)
        self.kv.free(victim.request_id)
        victim.prefill_target = victim.prompt_tokens + victim.generated
        victim.prefilled = 0
        victim.phase = rq.WAITING
        self._push_waiting(victim)
        self.host.log_event(PREEMPT, self, victim, "recompute: no free KV block")
        return 0

    def _evict_for_head(self, step: int) -> int:
        """Evict running lower-priority requests until the waiting head can be admitted.

        Returns the blocks saved to host memory (their PCIe time is part of this iteration).
        A decoding victim keeps its KV in this instance's host memory when there is room, so it
        resumes without recomputing; a victim mid-prefill (or with no host room) recomputes.
        """
        saved = 0
        while self.waiting:
            head = self.waiting[0][1]
            need = -(-head.prefill_target // self.block_size)
            if self._seats_left() > 0 and self.kv.can_allocate(need):
                return saved
            running = [r for r in (*self.decodes.members.values(), *self.prefilling)
                       if r.priority > head.priority]
            if not running:
                return saved
            victim = max(running, key=Request.sort_key)
            victim.evictions += 1
            self._running_remove(victim)
            if victim.phase == rq.DECODING:
                self._leave_decode(victim, step)
                if self.kv.can_swap_out(victim.request_id):
                    blocks = self.kv.swap_out(victim.request_id)
                    saved += blocks
                    victim.kv_home = self
                else:
                    self.kv.free(victim.request_id)
            else:
                self.prefilling.remove(victim)
                self.kv.free(victim.request_id)
            if victim.kv_home is None:
                victim.prefill_target = victim.prompt_tokens + victim.generated
            victim.prefilled = 0
            victim.phase = rq.QUEUED
            victim.instance = None
            self.host.log_event(EVICT, self, victim,
                                f"for request {head.request_id} ({head.request_class})")
            self.host.request_evicted(victim)
        return saved

    def _running_add(self, req: Request) -> None:
        counts = self.running_by_class
        counts[req.request_class] = counts.get(req.request_class, 0) + 1

    def _running_remove(self, req: Request) -> None:
        counts = self.running_by_class
        left = counts[req.request_class] - 1
        if left:
            counts[req.request_class] = left
        else:
            del counts[req.request_class]

    def _leave_decode(self, req: Request, step: int) -> None:
        """Take a decoding request out of the set, settling its tokens, blocks and ITL."""
        self._attribute_growth(req, step)
        if step > req.join_step:
            req.note_itl(self.itl_window.max_since(req.join_step))
            req.last_token_time = self.clock  # planning happens at an iteration boundary
        self.decodes.remove(req, step)

    # --- observation ----------------------------------------------------------------------
    def _progress(self, now: float) -> tuple[int, int]:
        """Iterations started and completed by ``now`` within the current stretch."""
        plan = self._stretch
        if plan is None:
            return 0, 0
        done = int(np.searchsorted(plan.ends[: plan.k], now, side="right"))
        started = min(plan.k, done + 1) if now >= plan.start_time else 0
        return started, done

    def kv_used_at(self, now: float) -> int:
        plan = self._stretch
        used = self.kv.used_blocks
        if plan is None:
            return used
        started, _ = self._progress(now)
        planned = int(plan.growth_cum[plan.k - 1])
        so_far = int(plan.growth_cum[started - 1]) if started else 0
        return used - (planned - so_far)

    def tokens_generated_at(self, now: float) -> int:
        plan = self._stretch
        if plan is None:
            return self.tokens_generated
        _, done = self._progress(now)
        return self.tokens_generated + plan.decodes * done

    def view(self, now: float) -> InstanceView:
        """A frozen snapshot for policies, exact at ``now`` even inside a stretch."""
        running = len(self.decodes) + len(self.prefilling)
        return InstanceView(
            instance_id=self.instance_id,
            pool=self.pool,
            state=self.state,
            running=running,
            waiting=len(self.waiting) + len(self.swapped),
            kv_used_blocks=self.kv_used_at(now),
            kv_capacity_blocks=self.kv.capacity,
            max_num_seqs=self.max_num_seqs,
            tokens_generated=self.tokens_generated_at(now),
            decode_iterations=self.decode_iterations,
            decode_seconds=self.decode_seconds,
            pure_decode_iterations=self.pure_decode_iterations,
            pure_decode_seconds=self.pure_decode_seconds,
            running_by_class=tuple(self.running_by_class.items()),
        )

    # --- end of simulation ----------------------------------------------------------------
    @property
    def held_count(self) -> int:
        """Requests on this instance in any phase: running, waiting or swapped out."""
        return len(self.decodes) + len(self.prefilling) + len(self.waiting) + len(self.swapped)

    def held_requests(self) -> list[Request]:
        return ([r for _, r in self.waiting] + [r for _, r in self.swapped]
                + list(self.prefilling) + list(self.decodes.members.values()))

    def settle_at(self, now: float) -> None:
        """At the horizon: settle lazily counted tokens of decoding requests (unfinished)."""
        plan = self._stretch
        done = self._progress(now)[1] if plan is not None else 0
        step = (plan.start_step + done) if plan is not None else self.step
        for req in list(self.decodes.members.values()):
            req.generated = req.gen_at_join + step - req.join_step
        if plan is not None:
            self.tokens_generated += plan.decodes * done
            self.busy_seconds = _add_in_order(self.busy_seconds, plan.durations[:done])
