"""One serving instance: lifecycle, the public API mechanisms use, and the SimPy loop.

The loop asks the local scheduler (:mod:`.engine.scheduler`) for the next iteration's batch,
the stretch planner (:mod:`.engine.stretch`) for its duration (a whole stretch of identical
decode iterations when nothing else can happen), sleeps until it ends or until something
wakes the instance (an arrival, a policy change) — then it stops at the end of the iteration
in progress — and commits the tokens, first tokens and completions.

Mechanisms (:mod:`.mechanisms`) act only at iteration boundaries and only through the public
API below: :meth:`Instance.detach` a request with its KV, :meth:`Instance.adopt` one,
:meth:`Instance.reserve_blocks` / :meth:`commit_reserved` / :meth:`cancel_reserved`, and the
read-only queries they decide on.
"""

from __future__ import annotations

import heapq
import math
from bisect import bisect_right
from collections import deque
from collections.abc import Callable, Hashable, Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np
import simpy
from simpy.events import PENDING, Event, Timeout

from chironsim.contract.states import DRAINING, FUSED, LOADING, PROVISIONING, READY, STOPPED
from chironsim.contract.load import LoadReport
from chironsim.contract.views import InstanceView
from chironsim.sim import request as rq
from chironsim.sim.allocator import KVBlockAllocator
from chironsim.sim.decode_set import DecodeSet, RunningMax
from chironsim.sim.engine.scheduler import make_scheduler
from chironsim.sim.engine.stretch import GROWTH, Stretch, StretchPlanner, add_in_order
from chironsim.sim.events import EventKind
from chironsim.sim.request import Request

if TYPE_CHECKING:
    from chironsim.sim.config import EngineConfig
    from chironsim.sim.mechanisms import BoundaryMechanism

__all__ = ["GROWTH", "Instance", "InstanceHost"]

def _tally(counts: dict, key: Hashable, delta: int) -> None:
    """Add ``delta`` to ``counts[key]``, dropping keys that reach zero (views list only the
    classes and priorities present)."""
    left = counts.get(key, 0) + delta
    if left:
        counts[key] = left
    else:
        del counts[key]


class InstanceHost:
    """What an instance reports to: the cluster. Defined as a base for type clarity."""

    def request_done(self, req: Request, status: str, reason: str = "") -> None: ...
    def log_event(self, kind: EventKind, instance: "Instance", req: Request | None, reason: str) -> None: ...
    def instance_stopped(self, instance: "Instance") -> None: ...
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
        mechanisms: Sequence["BoundaryMechanism"] = (),
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
        #: Queue order and preemption order (the largest key goes first): by class priority,
        #: or first come, first served for every class when priority scheduling is off.
        self.order: Callable[[Request], tuple[int, float, int]] = (
            Request.sort_key if engine.priority_scheduling else Request.fcfs_key)
        #: Run at every iteration boundary, after decode growth and before admission.
        self.mechanisms = tuple(mechanisms)
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
        # Requests whose KV landed here from another instance (a migration committed): they
        # join the decode batch at the next iteration boundary, before growth is claimed.
        self.arriving: deque[Request] = deque()
        # Decoding requests a mechanism took out of the batch with their KV kept here (a
        # fused group's stale requests awaiting their KV exchange): off every queue, holding
        # their blocks, until :meth:`adopt_running` lets them join again (see :meth:`pause`).
        self.paused: dict[int, Request] = {}
        # Requests held in any of the queues above and the decode set (``held_count``), kept
        # as one integer: changed where a request comes onto this instance (adopt,
        # adopt_running, give_paused to here) or leaves it (detach, give_paused from here,
        # _finish); moves between the queues (admission, preemption, pause, sit-out) keep it.
        self._held = 0
        #: The leader id of the fused group this instance belongs to ('' when independent),
        #: set by :mod:`.mechanisms.fusion` from the drop action to the split.
        self.group = ""
        # Decode growth the scheduler claimed at this boundary (see settle_growth).
        self.boundary_growth = 0
        # Called with the time a request starts decoding here again (see when_decoding).
        self._decoding_hooks: dict[int, Callable[[float], None]] = {}
        # Requests detached at this boundary, to be placed again once admission is done
        # (see place_after_admission).
        self.handed_back: list[tuple[Request, Callable[[Request], None]]] = []
        self.state = PROVISIONING
        self.step = 0
        self.clock = env.now
        self.tokens_generated = 0
        self.tokens_prefilled = 0
        self.requests_finished = 0
        self.decode_iterations = 0
        self.pure_decode_iterations = 0
        # busy_seconds, decode_seconds and pure_decode_seconds as of the last _fold; the
        # committed iterations' durations not yet added are in _unfolded (see _fold).
        self._busy_seconds = 0.0
        self._decode_seconds = 0.0
        self._pure_decode_seconds = 0.0
        self._unfolded: list[tuple[np.ndarray, int, int]] = []
        self.running_by_class: dict[str, int] = {}
        self.running_by_priority: dict[int, int] = {}
        # Waiting requests that had run before (preempted by recompute): Llumnix's "killed".
        self.preempted_waiting = 0
        # KV blocks that queued requests (waiting prompts, swapped/saved KV) will claim.
        self.pending_blocks = 0
        self.provision_time = env.now
        self.ready_time = math.nan
        self.drain_time = math.nan
        self.stop_time = math.nan
        self._stretch: Stretch | None = None
        # (ends, its Python copy, the growth claimed) of the stretch kv_used_at last read
        self._stretch_lists: tuple = (None, [], 0)
        # The last load report and its fields, handed out again while they hold (load_report)
        self._last_report: LoadReport | None = None
        self._last_report_fields: tuple = ()
        self._wake: simpy.Event | None = None
        # Where inter-token gaps go (the host's ``itl_recorder``, read when the loop starts):
        # an :class:`~chironsim.metrics.histogram.ItlRecorder`, or None to keep none.
        self._itl = None
        self.scheduler = make_scheduler(self)  # the engine's batching policy
        self.planner = StretchPlanner(self.decodes, self.kv, iteration_time, engine.fast_forward)

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

    def set_fused(self) -> None:
        """A follower of a fused group: billed, not routable, holding nothing of its own
        (:mod:`.mechanisms.fusion`). Only a ready instance with no request can be fused."""
        active = self.held_count - len(self.paused)
        if self.state != READY or active:
            raise ValueError(f"{self.instance_id} is {self.state} with {active} "
                             "requests; only an empty ready instance can be fused (paused "
                             "requests, whose KV the group's leader takes, may remain)")
        self.state = FUSED

    def set_ready(self) -> None:
        """A fused follower is an independent instance again (its group split)."""
        if self.state != FUSED:
            raise ValueError(f"{self.instance_id} is {self.state}, not fused")
        self.state = READY
        self.wake()

    def resize_kv(self, blocks: int, watermark: int | None = None) -> int:
        """Change the KV capacity at an iteration boundary (a fused group's drop or split);
        returns the change in free blocks. Only free blocks come or go
        (:meth:`KVBlockAllocator.resize`); the watermark is the engine's fraction of the new
        capacity unless given."""
        self._cut_stretch(self.env.now)
        if watermark is None:
            watermark = int(self.engine.watermark * blocks)
        delta = self.kv.resize(blocks, watermark)
        self.wake()
        return delta

    def resize_limits(self, max_num_seqs: int, max_batched_tokens: int) -> tuple[int, int]:
        """Change the engine's batch limits (``max_num_seqs``, ``max_num_batched_tokens``) at
        an iteration boundary, as :meth:`resize_kv` changes its KV capacity: a fused group's
        leader schedules for the whole group (:mod:`.mechanisms.fusion`). The scheduler reads
        both at every boundary; requests already running above a lowered limit keep running
        (as with :meth:`set_max_num_seqs`). Returns the previous pair."""
        old = (self.max_num_seqs, self.max_batched_tokens)
        self.max_num_seqs = max(1, int(max_num_seqs))
        self.max_batched_tokens = max(1, int(max_batched_tokens))
        self.wake()
        return old

    def swap_iteration_time(self, iteration_time: Callable, fast_forward: bool,
                            batch_time: Callable | None = None) -> tuple[Callable, bool, Callable | None]:
        """Price the next iterations with ``iteration_time`` (a fused group's pipeline round),
        or, for a single iteration, with ``batch_time(step, chunks, decodes)`` when given (its
        micro-batch queues); fast-forward only if ``fast_forward``. Returns the previous
        triple, to swap back."""
        planner = self.planner
        old = (self._iteration_time, planner.fast_forward, planner.batch_time)
        self._iteration_time = iteration_time
        planner.iteration_time = iteration_time
        planner.fast_forward = fast_forward
        planner.batch_time = batch_time
        return old

    def _stop(self) -> None:
        self.state = STOPPED
        self.stop_time = self.env.now
        self.host.instance_stopped(self)

    # --- requests -------------------------------------------------------------------------
    def adopt(self, req: Request) -> None:
        """Take a request into the waiting queue (rejecting what can never fit): a new
        arrival, or one detached elsewhere, adopting the KV it saved there.

        A request detached with its KV saved in host memory resumes without recomputing:
        from this instance's own host memory over PCIe, or moved from the other instance's
        host over the network. If that instance is gone, the KV is lost and the request
        recomputes its prompt and generated tokens. Each adoption appends this instance to
        the request's ``instances`` (the instances it visited, in order).
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
                heapq.heappush(self.swapped, (self.order(req), req))
                self._held += 1
                self.wake()
                return
            req.prefill_target = req.prompt_tokens + req.generated
        req.phase = rq.WAITING
        self.push_waiting(req)
        self._held += 1
        self.wake()

    #: An arrival is adopted like any other request (it just has no KV anywhere yet).
    enqueue = adopt

    def detach(self, req: Request, save_kv: bool) -> int:
        """Take ``req`` off this instance at an iteration boundary; returns blocks saved.

        Running or waiting requests only (a swapped one comes back in first). A decoding
        request with ``save_kv`` keeps its KV in this instance's host memory when there is
        room (``req.kv_home`` then points here, and whoever adopts it restores that KV);
        otherwise its KV is freed and it will recompute prompt and generated tokens. The
        caller places the request again; until then it is ``queued`` on no instance.
        """
        phase = req.phase
        saved = 0
        if phase == rq.WAITING:
            self.waiting.remove((self.order(req), req))
            heapq.heapify(self.waiting)
            self.left_waiting(req)
            self.pending_blocks -= -(-req.prefill_target // self.block_size)
        elif phase in (rq.DECODING, rq.PREFILLING):
            self.running_remove(req)
            if phase == rq.DECODING:
                self.leave_decode(req, self.step)
                if save_kv and self.kv.can_swap_out(req.request_id):
                    saved = self.kv.swap_out(req.request_id)
                    req.kv_home = self
                else:
                    self.kv.free(req.request_id)
            else:
                self.prefilling.remove(req)
                self.kv.free(req.request_id)
            if req.kv_home is None:
                req.prefill_target = req.prompt_tokens + req.generated
            req.prefilled = 0
        else:
            raise ValueError(f"cannot detach {req!r} from {self.instance_id}: only running or "
                             "waiting requests can be")
        self._held -= 1
        req.phase = rq.QUEUED
        req.instance = None
        return saved

    def place_after_admission(self, req: Request, place: Callable[[Request], None]) -> None:
        """Call ``place(req)`` for a request detached at this boundary once the boundary's
        admission is done, not now.

        A mechanism that detaches work to make room for a waiting request (eviction) must not
        hand the work back while that room is still free: placed again at once, it can land
        on this very instance (its saved KV makes it a swapped request, which comes back
        before anything is admitted) and take the room back ahead of the request it was
        evicted for, at every boundary, forever. Handed back after admission, it finds the
        room taken and waits its turn like any other request."""
        self.handed_back.append((req, place))

    def hand_back_detached(self) -> None:
        """The scheduler's last step at a boundary: place what :meth:`place_after_admission`
        held, in the order it was detached."""
        handed_back, self.handed_back = self.handed_back, []
        for req, place in handed_back:
            place(req)

    def adopt_running(self, req: Request) -> None:
        """Take a decoding request whose KV already sits in this instance's blocks (a
        committed reservation owned by its id): it joins the decode batch at the next
        iteration boundary without a prefill or a transfer. Like a migrated-in request in
        Llumnix, it takes a seat even when the batch is full."""
        if self.kv.owned(req.request_id) == 0:
            raise ValueError(f"{req!r} owns no KV blocks on {self.instance_id} to resume from")
        if self.paused.pop(req.request_id, None) is None:
            self._held += 1  # from off this instance; a request paused here was counted
        req.instance = self
        req.instances.append(self.instance_id)
        req.phase = rq.SWAPPED  # off every queue until it joins; it holds its blocks here
        self.arriving.append(req)
        self.wake()

    def pause(self, req: Request) -> int:
        """Take a decoding request out of the batch at an iteration boundary, keeping its KV
        blocks owned here; returns them. It waits in :attr:`paused` (counted as running in
        views, keeping its seat, held at the horizon) until :meth:`adopt_running` here, or until
        :meth:`give_paused` hands it with its blocks to another instance. A mechanism that
        pauses decodes calls :meth:`settle_growth` before resizing this allocator."""
        if req.phase != rq.DECODING or req.instance is not self:
            raise ValueError(f"cannot pause {req!r} on {self.instance_id}: only a request "
                             "decoding here can be")
        self.running_remove(req)
        self.leave_decode(req, self.step)
        req.phase = rq.SWAPPED  # off every queue; it holds its blocks here
        self.paused[req.request_id] = req
        return self.kv.owned(req.request_id)

    def give_paused(self, req: Request, dst: "Instance") -> int:
        """Hand a paused request and its KV blocks to ``dst`` (both at a boundary or idle):
        the blocks leave this allocator and arrive in ``dst``'s in one step
        (:meth:`KVBlockAllocator.move_to`); it stays paused there. Returns the blocks."""
        if self.paused.get(req.request_id) is not req:
            raise ValueError(f"{req!r} is not paused on {self.instance_id}")
        dst._cut_stretch(dst.env.now)
        blocks = self.kv.move_to(dst.kv, req.request_id)
        del self.paused[req.request_id]
        self._held -= 1
        dst.paused[req.request_id] = req
        dst._held += 1
        req.instance = dst
        self.wake()
        dst.wake()
        return blocks

    def settle_growth(self) -> int:
        """Give back now the decode growth claimed at this boundary for decodes a mechanism
        took out of the batch (the scheduler would at the end of its mechanisms); returns
        the blocks given back. Lets a mechanism shrink the allocator at the same boundary."""
        surplus = self.boundary_growth - self.decodes.growth_at(self.step)
        if surplus > 0:
            self.release_growth(surplus)
            self.boundary_growth -= surplus
            return surplus
        return 0

    def when_decoding(self, req: Request, hook: Callable[[float], None]) -> None:
        """Call ``hook(time)`` once, when ``req`` next starts decoding on this instance: it
        joins a batch with its KV, or its (re)prefill ends. A mechanism measures the downtime
        of a request it moved with it."""
        self._decoding_hooks[req.request_id] = hook

    def forget_hook(self, req: Request) -> None:
        """Drop ``req``'s :meth:`when_decoding` hook (the request will not resume here)."""
        self._decoding_hooks.pop(req.request_id, None)

    # --- KV reservations (a transfer's destination blocks) ----------------------------------
    def reserve_blocks(self, owner: Hashable, blocks: int, respect_watermark: bool = True) -> bool:
        """Set aside ``blocks`` free blocks for an incoming transfer; False if they are not
        free (above the watermark unless told otherwise). They count as used until committed
        to ``owner`` or cancelled.

        Called mid-iteration (a transfer starts when its source is at a boundary), so a
        stretch in progress is first cut back to the iteration under way: the blocks it had
        claimed ahead for later iterations are free *now* as they would be when stepping one
        iteration at a time, and the next iteration replans against the reservation."""
        self._cut_stretch(self.env.now)
        if not self.kv.can_allocate(blocks, respect_watermark):
            return False
        self.kv.reserve(owner, blocks)
        return True

    def commit_reserved(self, owner: Hashable) -> int:
        """The transfer landed: ``owner`` (a request id) now owns its reserved blocks."""
        blocks = self.kv.commit_reservation(owner)
        self.wake()  # a draining instance that only held the reservation may stop now
        return blocks

    def cancel_reserved(self, owner: Hashable) -> int:
        """The transfer was aborted: its reserved blocks are free again (and may admit work)."""
        blocks = self.kv.cancel_reservation(owner)
        if blocks:
            self.wake()
        return blocks

    def _cut_stretch(self, now: float) -> None:
        """End the stretch in progress with the iteration under way at ``now``, giving back
        the decode growth claimed ahead for the iterations that will not run (also those a
        wake already dropped, whose blocks would otherwise come back only at commit)."""
        plan = self._stretch
        if plan is None:
            return
        k = min(plan.k, max(1, self._progress(now)[0]))
        unused = plan.grown(len(plan.ends)) - plan.grown(k)
        if unused:
            self.release_growth(unused)
        if k < len(plan.ends):
            shorter = k < plan.k
            plan.k = k
            plan.ends, plan.durations = plan.ends[:k], plan.durations[:k]
            if shorter:
                self.wake()

    # --- queries mechanisms decide on -------------------------------------------------------
    def waiting_head(self) -> Request | None:
        """The next request admission would take, or None."""
        return self.waiting[0][1] if self.waiting else None

    def can_admit(self, req: Request) -> bool:
        """Whether ``req`` would be admitted now: a free seat and KV for its prefill above
        the watermark."""
        return (self.seats_left() > 0
                and self.kv.can_allocate(-(-req.prefill_target // self.block_size)))

    def running_requests(self) -> Iterator[Request]:
        """Admitted requests: decoding, then mid-prefill."""
        yield from self.decodes.members.values()
        yield from self.prefilling

    def context_of(self, req: Request) -> int:
        """Tokens (prompt + generated) of a request decoding here, at this boundary."""
        return req.prompt_tokens + req.gen_at_join + self.step - req.join_step

    def blocks_of(self, req: Request) -> int:
        """KV blocks a request decoding here holds at this boundary (before this
        iteration's growth): what a migration has to copy."""
        return self.decodes.blocks_held(req, self.step)

    @property
    def has_swapped(self) -> bool:
        """Requests preempted to host memory wait to come back; nothing new is admitted."""
        return bool(self.swapped)

    def room_for(self, req: Request) -> bool:
        """Whether pulling ``req`` from a cluster queue would let it start soon: a free seat
        counting what already waits here, and KV for its prompt above the watermark.

        Asked mid-iteration too (an arrival to an empty cluster queue), so the free blocks are
        those at this instant (:meth:`kv_used_at`): inside a stretch the allocator's free count
        lacks the decode growth claimed ahead for its later iterations, and an arrival that
        stepping would place at once stayed queued until the stretch ended."""
        if self.state != READY:
            return False
        if self.held_count >= self.max_num_seqs:
            return False
        need = self.pending_blocks + -(-(req.prompt_tokens + req.generated) // self.block_size)
        kv = self.kv
        free = kv.free_blocks if self._stretch is None else kv.capacity - self.kv_used_at(self.env.now)
        return free - need >= kv.watermark

    def push_waiting(self, req: Request) -> None:
        self.pending_blocks += -(-req.prefill_target // self.block_size)
        if req.preemptions:
            self.preempted_waiting += 1
        heapq.heappush(self.waiting, (self.order(req), req))

    def left_waiting(self, req: Request) -> None:
        """``req`` left the waiting queue (admitted or detached)."""
        if req.preemptions:
            self.preempted_waiting -= 1

    def set_max_num_seqs(self, value: int) -> None:
        self.max_num_seqs = max(1, int(value))
        self.wake()

    def wake(self) -> None:
        """Something changed that may alter the next iteration."""
        if self._wake is not None and not self._wake.triggered:
            self._wake.succeed()

    @property
    def has_work(self) -> bool:
        # Reserved blocks are a transfer under way: a draining source waits for its copy to
        # land, a draining destination for the request it will receive.
        return bool(self.decodes.members or self.prefilling or self.waiting or self.swapped
                    or self.arriving or self.paused or self.kv.has_reservations)

    # --- the engine loop ------------------------------------------------------------------
    def _run(self):
        env = self.env
        self._itl = getattr(self.host, "itl_recorder", None)
        schedule, price = self.scheduler.schedule, self.planner.plan  # bound once: hot loop
        while True:
            # The scheduler's batch for the next iteration, priced (and extended into a
            # stretch when it only decodes) by the planner; None when there is no work.
            chunks, resumed, transfer_seconds, growth = schedule(self.step)
            plan = price(self.step, self.clock, chunks, resumed, transfer_seconds, growth)
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
                # Sleep until the stretch's end or a wake, whichever first: what ``timer |
                # wake`` did, without building a Condition per stretch. As with the
                # Condition, either event triggers ``done`` when processed and the loop
                # resumes when ``done`` is processed (the same two hops, so the same order
                # among events of the same instant); the later one finds it triggered.
                done = Event(env)
                wake = self._wake = Event(env)

                def fire(_event, done=done):
                    if done._value is PENDING:
                        done.succeed()

                end = float(plan.ends[plan.k - 1])
                Timeout(env, max(0.0, end - env.now)).callbacks.append(fire)
                wake.callbacks.append(fire)
                yield done
                self._wake = None
                end = float(plan.ends[plan.k - 1])  # a cut while waiting may have shortened it
                if env.now < end:
                    # Woken mid-stretch: finish the iteration in progress, then re-plan.
                    plan.k = min(plan.k, int(plan.ends.searchsorted(env.now, "left")) + 1)
                    end = float(plan.ends[plan.k - 1])
            else:
                end = float(plan.ends[0])
            if end > env.now:
                yield env.timeout(end - env.now)
            self._commit(plan, end)
            self._stretch = None

    def _commit(self, plan: Stretch, now: float) -> None:
        """Apply the effects of ``plan.k`` completed iterations; ``now`` is the last one's end
        (``plan.ends[plan.k - 1]``, as a float)."""
        k = plan.k
        planned = len(plan.ends)
        if k < planned:
            unused = plan.grown(planned) - plan.grown(k)
            if unused:
                self.release_growth(unused)
        self.clock = now
        self.step = plan.start_step + k
        self.itl_window.push(self.step - 1, float(plan.durations[k - 1]))
        self.tokens_generated += plan.decodes * k
        kind = 0
        if plan.decodes:
            self.decode_iterations += k
            kind = 1
            if plan.pure_decode:
                self.pure_decode_iterations += k
                kind = 2
        unfolded = self._unfolded
        unfolded.append((plan.durations, k, kind))
        if len(unfolded) >= self.FOLD_AFTER:
            self._fold()
        itl = self._itl
        if itl is not None and plan.decode_classes:
            self._record_gaps(itl, plan, k)
        if plan.resumed:
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

    #: Committed plans whose durations are added to the busy and decode seconds at once.
    FOLD_AFTER = 256

    def _fold(self) -> None:
        """Add the durations of the committed iterations not yet added to ``busy_seconds``,
        ``decode_seconds`` (plans that decoded) and ``pure_decode_seconds`` (pure decode):
        left to right, one IEEE addition per iteration, exactly as adding each plan's at its
        commit did, but one ``cumsum`` per figure for many plans instead of three per plan."""
        pending = self._unfolded
        if not pending:
            return
        self._unfolded = []
        self._busy_seconds = add_in_order(self._busy_seconds,
                                          np.concatenate([d[:k] for d, k, _ in pending]))
        decoded = [d[:k] for d, k, kind in pending if kind]
        if decoded:
            self._decode_seconds = add_in_order(self._decode_seconds, np.concatenate(decoded))
            pure = [d[:k] for d, k, kind in pending if kind == 2]
            if pure:
                self._pure_decode_seconds = add_in_order(self._pure_decode_seconds,
                                                         np.concatenate(pure))

    @property
    def busy_seconds(self) -> float:
        """Seconds of committed iterations (kept as the sum stepping would have added)."""
        self._fold()
        return self._busy_seconds

    @property
    def decode_seconds(self) -> float:
        """Seconds of committed iterations that decoded."""
        self._fold()
        return self._decode_seconds

    @property
    def pure_decode_seconds(self) -> float:
        """Seconds of committed iterations that only decoded (no prefill, no KV transfer)."""
        self._fold()
        return self._pure_decode_seconds

    def _record_gaps(self, itl, plan: Stretch, k: int) -> None:
        """Every decoding request got one token per iteration of ``plan``'s first ``k``: an
        inter-token gap equal to the iteration's duration, recorded per class in bulk (queued,
        bucketed later for many iterations at once: nothing per request). A request that joined
        the batch with this plan after a pause (swap-in, migration, exchange) had its previous
        token before the pause: its first gap is from that token, not the iteration's."""
        pending = itl.pending  # ItlRecorder.push, inlined: this runs every iteration
        pending.append((plan.decode_classes, plan.durations, k))
        if len(pending) >= itl.FLUSH_AFTER:
            itl.flush()
        if plan.resumed:
            first = float(plan.durations[0])
            first_end = float(plan.ends[0])
            for req in plan.resumed:
                if req.phase == rq.DECODING and req.join_step == plan.start_step:
                    itl.gap(req.request_class, first, -1)
                    itl.gap(req.request_class, first_end - req.last_token_time)

    # --- engine bookkeeping (the loop, the scheduler and the API above share it) ------------
    def seats_left(self) -> int:
        """Seats under ``max_num_seqs``: a paused request keeps its seat (it is still running,
        out of the batch only while its KV moves), so no admission takes it meanwhile."""
        return self.max_num_seqs - len(self.decodes) - len(self.prefilling) - len(self.paused)

    def _emit_first_token(self, req: Request, now: float) -> None:
        """A (re)prefill finished: it samples the next token."""
        req.generated += 1
        self.tokens_generated += 1
        if math.isnan(req.first_token_time):
            req.first_token_time = now
        else:  # a recompute's prefill samples the next token: one gap, across the preemption
            req.note_itl(now - req.last_token_time)
            if self._itl is not None:
                self._itl.gap(req.request_class, now - req.last_token_time)
        req.last_token_time = now
        if req.generated >= req.output_tokens:
            self._finish(req, now)
        else:
            self.join_decode(req, self.step)

    def join_decode(self, req: Request, step: int) -> None:
        req.phase = rq.DECODING
        self.decodes.add(req, step)
        if self._decoding_hooks:
            hook = self._decoding_hooks.pop(req.request_id, None)
            if hook is not None:
                hook(self.clock)

    def _finish(self, req: Request, now: float) -> None:
        req.generated = req.output_tokens
        if req.output_tokens > 1 and req.join_step < self.step and req.phase == rq.DECODING:
            req.note_itl(self.itl_window.max_since(req.join_step))
        req.last_token_time = now
        req.finish_time = now
        req.phase = rq.DONE
        self._held -= 1
        self.running_remove(req)
        self.kv.free(req.request_id)
        self.requests_finished += 1
        self.host.request_done(req, "finished")

    def _attribute_growth(self, req: Request, step: int) -> None:
        """Move the pooled growth blocks that belong to ``req`` into its own account."""
        share = self.decodes.blocks_held(req, step) - self.kv.owned(req.request_id)
        if share:
            self.kv.transfer(GROWTH, req.request_id, share)

    def release_growth(self, blocks: int) -> None:
        self.kv.transfer(GROWTH, "__release__", blocks)
        self.kv.free("__release__")

    def running_add(self, req: Request) -> None:
        _tally(self.running_by_class, req.request_class, +1)
        _tally(self.running_by_priority, req.priority, +1)

    def running_remove(self, req: Request) -> None:
        _tally(self.running_by_class, req.request_class, -1)
        _tally(self.running_by_priority, req.priority, -1)

    def leave_decode(self, req: Request, step: int) -> None:
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
        # ``ends`` is non-decreasing, so the count of its first ``k`` at or before ``now`` is
        # the count over all of it capped at ``k`` (no slice, no numpy dispatch: hot path).
        k = plan.k
        done = int(plan.ends.searchsorted(now, "right"))
        if done > k:
            done = k
        started = (done + 1 if done < k else k) if now >= plan.start_time else 0
        return started, done

    def kv_used_at(self, now: float) -> int:
        """KV blocks in use at ``now``, exact inside a stretch: :meth:`_progress`'s started
        count and :meth:`_kv_used_in`'s formula in one call, because every poll and every
        routing tie reads this for each instance.

        A stretch is read tens of times (36 on average in the 8-instance Llumnix hour, whose
        manager polls every instance 20 times a second), so its ends and cumulative growth are copied to Python lists
        at the first read and searched with bisect: the same counts and integers as
        ``searchsorted`` and numpy indexing, at a third of the cost. The copies are tied to
        the arrays they came from, so a stretch cut short (new arrays) gets new copies."""
        kv = self.kv
        plan = self._stretch
        if plan is None:
            return kv.capacity - kv.free_blocks
        lists = self._stretch_lists
        if lists[0] is not plan.ends:
            lists = self._stretch_lists = (plan.ends, plan.ends.tolist(),
                                           plan.grown(len(plan.ends)))
        ends = lists[1]
        claimed = lists[2]  # the growth the stretch claimed when planned (or cut)
        if now < plan.start_time:  # no iteration started: none of the claim is in use
            return kv.capacity - kv.free_blocks - claimed
        k = plan.k
        done = bisect_right(ends, now)  # iterations ended by now (ends never decrease)
        started = done + 1 if done < k else k
        return kv.capacity - kv.free_blocks - (claimed - plan.grown(started))

    def _kv_used_in(self, plan: Stretch, started: int) -> int:
        used = self.kv.used_blocks
        # What the stretch claimed when planned: a wake shortens plan.k but gives the blocks
        # of the iterations it drops back only when the stretch commits.
        planned = plan.grown(len(plan.ends))
        so_far = plan.grown(started)
        return used - (planned - so_far)

    def occupancy(self, now: float) -> tuple[int, int, int, int]:
        """Running and waiting requests, KV blocks in use and output tokens generated at
        ``now``, exact inside a stretch (one _progress for both time-dependent figures).
        :meth:`view` and the timeseries sampler share it; the sampler reads every instance
        at every sample and needs no frozen view for that."""
        running = (len(self.decodes.members) + len(self.prefilling) + len(self.arriving)
                   + len(self.paused))
        waiting = len(self.waiting) + len(self.swapped)
        plan = self._stretch
        if plan is None:
            return running, waiting, self.kv.used_blocks, self.tokens_generated
        started, done = self._progress(now)
        return (running, waiting, self._kv_used_in(plan, started),
                self.tokens_generated + plan.decodes * done)

    def decode_counters(self, now: float) -> tuple[int, float, int, float]:
        """``decode_iterations``, ``decode_seconds``, ``pure_decode_iterations`` and
        ``pure_decode_seconds`` at ``now``, exact inside a stretch: the iterations it has
        completed by ``now`` are counted, their durations added in order, as stepping would
        have committed them one by one. (Read stale, a policy that measures ITL from these
        counters, such as Chiron's local autoscaler, saw a different window with fast-forward
        on than off, and acted differently.)"""
        counters = (self.decode_iterations, self.decode_seconds,
                    self.pure_decode_iterations, self.pure_decode_seconds)
        plan = self._stretch
        if plan is None or not plan.decodes:
            return counters
        done = self._progress(now)[1]
        if not done:
            return counters
        iterations, seconds, pure_iterations, pure_seconds = counters
        durations = plan.durations[:done]
        iterations += done
        seconds = add_in_order(seconds, durations)
        if plan.pure_decode:
            pure_iterations += done
            pure_seconds = add_in_order(pure_seconds, durations)
        return iterations, seconds, pure_iterations, pure_seconds

    def view(self, now: float) -> InstanceView:
        """A frozen snapshot for policies, exact at ``now`` even inside a stretch."""
        running, waiting, kv_used, tokens = self.occupancy(now)
        iterations, seconds, pure_iterations, pure_seconds = self.decode_counters(now)
        return InstanceView(
            instance_id=self.instance_id,
            pool=self.pool,
            state=self.state,
            running=running,
            waiting=waiting,
            kv_used_blocks=kv_used,
            kv_capacity_blocks=self.kv.capacity,
            max_num_seqs=self.max_num_seqs,
            tokens_generated=tokens,
            decode_iterations=iterations,
            decode_seconds=seconds,
            pure_decode_iterations=pure_iterations,
            pure_decode_seconds=pure_seconds,
            running_by_class=tuple(self.running_by_class.items()),
            group=self.group,
        )

    def load_report(self, now: float, migrations_out: int = 0, migrations_in: int = 0) -> LoadReport:
        """What Llumnix's instance reports at a poll, from counters kept as the engine runs:
        O(1), no per-request list. Exact at ``now`` inside a stretch, like :meth:`view`.

        Queued demand is this engine's own ``pending_blocks`` (whole blocks, swapped-out KV
        included) where the released code sums ``prompt_len / block_size`` over its waiting
        queue; the head of line is the released code's unrounded form."""
        waiting, swapped, kv = self.waiting, self.swapped, self.kv
        decoding = len(self.decodes.members)
        fields = (
            self.instance_id, self.pool, self.state, kv.capacity,
            kv.capacity - self.kv_used_at(now), kv.watermark,
            decoding + len(self.prefilling) + len(self.arriving) + len(self.paused),
            len(waiting) + len(swapped),
            float(self.pending_blocks),
            waiting[0][1].prefill_target / self.block_size if waiting else 0.0,
            len(swapped) + self.preempted_waiting,
            migrations_out, migrations_in,
            decoding - migrations_out if decoding > migrations_out else 0,  # movable
            tuple(self.running_by_priority),
            self.group,
        )
        # Half the polls find an instance as the previous one did; building the frozen
        # report is most of a poll's cost, so an unchanged one is handed out again.
        last = self._last_report
        if last is None or fields != self._last_report_fields:
            last = self._last_report = LoadReport(*fields)
            self._last_report_fields = fields
        return last

    # --- end of simulation ----------------------------------------------------------------
    @property
    def held_count(self) -> int:
        """Requests on this instance in any phase: running, waiting or swapped out."""
        return self._held

    def held_requests(self) -> list[Request]:
        return ([r for _, r in self.waiting] + [r for _, r in self.swapped]
                + list(self.prefilling) + list(self.decodes.members.values())
                + list(self.arriving) + list(self.paused.values()))

    def settle_at(self, now: float) -> None:
        """At the horizon: settle lazily counted tokens of decoding requests (unfinished)."""
        plan = self._stretch
        done = self._progress(now)[1] if plan is not None else 0
        step = (plan.start_step + done) if plan is not None else self.step
        for req in list(self.decodes.members.values()):
            req.generated = req.gen_at_join + step - req.join_step
        if plan is not None:
            self.tokens_generated += plan.decodes * done
            if done and self._itl is not None and plan.decode_classes:
                self._record_gaps(self._itl, plan, done)
            self._fold()
            self._busy_seconds = add_in_order(self._busy_seconds, plan.durations[:done])
