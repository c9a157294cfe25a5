"""Moving a request and its KV cache between instances (Llumnix's live migration, DESIGN §2).

A :class:`~chironsim.contract.actions.Migrate` action registers a move with the cluster's
:class:`MigrationCoordinator`, which attaches itself to the source as a boundary mechanism
while it has moves there and acts only at the source's iteration boundaries, through the public
:class:`~chironsim.sim.instance.Instance` API. Modes (``cluster.migration.mode``):

- ``live`` (``reference/llumnix_kunserve.md`` A.1, the released code's ``migrate_out``): up to
  ``max_stages`` stages; a live stage reserves on the destination and copies the blocks not yet
  copied except the last, partly written one, while the request keeps decoding on the source;
  once at most ``last_stage_max_blocks`` are left, the request stops, the rest is copied, the
  destination commits it and it joins the destination's next iteration. Its downtime is stop →
  that iteration.
- ``blocking``: stop at once and copy every block in one stage (the paper's baseline).
- ``recompute``: stop at once, drop the KV, and let the destination recompute prompt and
  generated tokens; downtime ends when it decodes again.

A stage takes its fixed cost plus the copy of its blocks (each GPU of a tensor-parallel replica
sends its shard at once): ``alpha_s + blocks × block bytes ÷ bandwidth`` with the Gloo backend,
the GPU's measured send/recv curve with NCCL (chironsim/perf/transfer.py ``KVCopy``). Destination blocks are reserved from stage 0, only above the
destination's watermark (the code's ``pre_alloc``), and count as used there; during the final
copy the source keeps the request's blocks as a reservation, so a draining source stops only
once the copy has landed. A move aborts, freeing every reservation, when the destination cannot
allocate or is no longer ready, or when the request finished, was preempted, swapped or evicted
on the source during a stage, or did not converge in ``max_stages``; one still holding
a reservation when the run ends aborts then (``run ended``). A waiting request is handed
over with no KV to copy (v0.1.0's ``migrate_out_waiting_request``). At most ``max_out`` /
``max_in`` moves run out of / into an instance at a time (37d8e5ea: one each).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import simpy

from chironsim.contract.actions import Migrate
from chironsim.contract.load import RunningRequest, choose_request
from chironsim.contract.states import READY, STOPPED
from chironsim.sim import request as rq
from chironsim.sim.actions import applies
from chironsim.sim.config import MigrationConfig
from chironsim.sim.events import REQUEST, EventLog, event_kind
from chironsim.sim.request import Request

if TYPE_CHECKING:
    from chironsim.sim.cluster import Cluster
    from chironsim.sim.instance import Instance

MIGRATE_START = event_kind("migrate_start", REQUEST, "the policy's reason",
                           "dst, mode and the blocks the request holds")
MIGRATE_STAGE = event_kind("migrate_stage", REQUEST, "'live' or 'final' (stop-and-copy)",
                           "dst, stage number, blocks copied, stage seconds")
MIGRATE_DONE = event_kind("migrate_done", REQUEST, "the mode ('handover' for a waiting request)",
                          "src, stages, blocks copied, downtime_s (stop → decoding again)")
MIGRATE_ABORT = event_kind("migrate_abort", REQUEST, "why the move stopped",
                           "dst and the stage it stopped in")


@dataclass(eq=False)
class _Move:
    """One migration in flight; ``stage_end`` is nan until a copy is under way."""

    action: Migrate
    src: "Instance"
    dst: "Instance"
    req: Request | None = None
    stage: int = 0
    copied: int = 0
    stage_end: float = math.nan
    stopped_at: float = math.nan
    watch: tuple[int, int] = (0, 0)  # (preemptions, evictions) when the stage began
    counted: bool = field(default=True)

    def detail(self, **extra: object) -> str:
        return ";".join(f"{k}={v}" for k, v in {"dst": self.dst.instance_id, **extra}.items())


class MigrationCoordinator:
    """Every move of one cluster. A boundary mechanism of each instance that has one out."""

    def __init__(self, env: simpy.Environment, events: EventLog, settings: MigrationConfig,
                 copy_seconds: Callable[["Instance", int], float],
                 compatible: Callable[["Instance", "Instance"], bool]) -> None:
        self.env = env
        self.events = events
        self.settings = settings
        self.copy_seconds = copy_seconds
        self.compatible = compatible
        self._by_source: dict["Instance", list[_Move]] = {}
        self._moving: dict[int, _Move] = {}          # running requests being moved, by id
        self.in_transfer: dict[int, Request] = {}    # stopped, on no instance until they land
        self.out_count: dict[str, int] = {}
        self.in_count: dict[str, int] = {}

    # --- entry: the action ------------------------------------------------------------------
    def submit(self, action: Migrate, src: "Instance | None", dst: "Instance | None") -> None:
        rid = -1 if action.request_id is None else action.request_id
        if src is None or dst is None or src.state == STOPPED:
            self._event(MIGRATE_ABORT, src, rid, "an instance is gone", f"dst={action.dst}")
            return
        move = _Move(action, src, dst)
        waiting = action.request_id is None and action.pick == "first_waiting"
        if not waiting:
            if self.out_count.get(src.instance_id, 0) >= self.settings.max_out:
                self._event(MIGRATE_ABORT, src, rid, "source busy", move.detail(stage=0))
                return
            if self.in_count.get(dst.instance_id, 0) >= self.settings.max_in:
                self._event(MIGRATE_ABORT, src, rid, "destination busy", move.detail(stage=0))
                return
            self._count(move, +1)
        else:
            move.counted = False
        moves = self._by_source.setdefault(src, [])
        if not moves:
            src.mechanisms = (*src.mechanisms, self)
        moves.append(move)
        src.wake()

    def _count(self, move: _Move, delta: int) -> None:
        for table, key in ((self.out_count, move.src.instance_id),
                           (self.in_count, move.dst.instance_id)):
            table[key] = table.get(key, 0) + delta
            if not table[key]:
                del table[key]

    # --- the source's iteration boundaries -------------------------------------------------
    def at_boundary(self, inst: "Instance", step: int) -> float:
        moves = self._by_source.get(inst, [])
        now = inst.clock
        for move in list(moves):
            if move.req is None:
                self._begin(move, inst)
            elif now >= move.stage_end:  # a live copy has ended: check, then go on
                move.stage_end = math.nan
                self._next_stage(move, now)
        return 0.0

    def _done_with(self, move: _Move) -> None:
        """``move`` no longer needs its source's boundaries."""
        moves = self._by_source.get(move.src)
        if moves is not None and move in moves:
            moves.remove(move)
            if not moves:
                del self._by_source[move.src]
                move.src.mechanisms = tuple(m for m in move.src.mechanisms if m is not self)

    def _begin(self, move: _Move, inst: "Instance") -> None:
        action = move.action
        req = self._pick(action, inst)
        if req is None:
            self._abort(move, "nothing to move")
            return
        move.req = req
        if move.dst.state != READY:
            self._abort(move, "destination not ready")
            return
        if not self.compatible(inst, move.dst):
            self._abort(move, "destination serves another model")
            return
        if req.phase == rq.WAITING:
            self._handover(move)
            return
        if req.phase != rq.DECODING:
            self._abort(move, f"request is {req.phase}, not decoding")
            return
        if req.request_id in self._moving:
            self._abort(move, "request already migrating")
            return
        if not move.counted:  # a waiting pick that found a running request named instead
            self._count(move, +1)
            move.counted = True
        self._moving[req.request_id] = move
        mode = self.settings.mode
        self._event(MIGRATE_START, inst, req.request_id, action.reason,
                    move.detail(mode=mode, blocks=inst.blocks_of(req)))
        if mode == "recompute":
            self._recompute(move)
        else:
            self._next_stage(move, inst.clock)

    def _pick(self, action: Migrate, inst: "Instance") -> Request | None:
        if action.request_id is not None:
            for req in (*inst.running_requests(), *(r for _, r in inst.waiting)):
                if req.request_id == action.request_id:
                    return req
            return None
        if action.pick == "first_waiting":
            return inst.waiting_head()
        candidates = {r.request_id: r for r in inst.running_requests()
                      if r.phase == rq.DECODING and r.request_id not in self._moving}
        # Admission order is arrival order, as in the released code's engine (vLLM 0.4.2 keeps
        # its running queue sorted FCFS by arrival every step, and a migrated request keeps its
        # arrival time). Ordering by when a request joined *this* instance made a request that
        # had just migrated in the "last running" one and the first to leave again (ping-pong).
        running = [RunningRequest(r.request_id, r.priority, inst.context_of(r), 0, r.arrival)
                   for r in candidates.values()]
        chosen = choose_request(running, action.pick, action.low_priority_first)  # type: ignore[arg-type]
        return None if chosen is None else candidates[chosen.request_id]

    # --- modes ------------------------------------------------------------------------------
    def _handover(self, move: _Move) -> None:
        req = move.req
        assert req is not None
        self._event(MIGRATE_START, move.src, req.request_id, move.action.reason,
                    move.detail(mode="handover", blocks=0))
        move.src.detach(req, save_kv=False)
        req.migrations += 1
        self._finish(move)
        move.dst.adopt(req)
        self._event(MIGRATE_DONE, move.dst, req.request_id, "handover",
                    f"src={move.src.instance_id};stages=0;blocks=0;downtime_s=0")

    def _recompute(self, move: _Move) -> None:
        req = move.req
        assert req is not None
        move.stopped_at = move.src.clock
        move.src.detach(req, save_kv=False)
        self._finish(move)
        move.dst.when_decoding(req, lambda t: self._resumed(move, t, 0))
        move.dst.adopt(req)

    def _next_stage(self, move: _Move, now: float) -> None:
        """At a source boundary: check the request, then start the next live stage or the
        final stop-and-copy (or give up after ``max_stages``)."""
        req, src, dst = move.req, move.src, move.dst
        assert req is not None
        if move.stage:
            why = self._lost(move)
            if why is not None:
                self._abort(move, why)
                return
        inc = src.blocks_of(req) - move.copied
        settings = self.settings
        final = self.settings.mode == "blocking" or inc <= settings.last_stage_max_blocks
        if not final and move.stage >= settings.max_stages:
            self._abort(move, f"not converged in {settings.max_stages} stages")
            return
        send = inc if final else inc - 1  # a live stage leaves the block being written
        if not dst.reserve_blocks(req.request_id, send):
            self._abort(move, "destination cannot allocate")
            return
        move.stage += 1
        move.copied += send
        seconds = settings.stage_alpha_s + self.copy_seconds(src, send)
        self._event(MIGRATE_STAGE, src, req.request_id, "final" if final else "live",
                    move.detail(stage=move.stage, blocks=send, seconds=f"{seconds:.6g}"))
        move.stage_end = now + seconds
        move.watch = (req.preemptions, req.evictions)
        if final:
            move.stopped_at = now
            src.detach(req, save_kv=False)
            # The source's copy of the KV stays in use until the transfer lands.
            src.reserve_blocks(req.request_id, move.copied, respect_watermark=False)
            self._done_with(move)
            self.in_transfer[req.request_id] = req
            self.env.timeout(seconds).callbacks.append(lambda _e: self._land(move))
        else:
            self.env.timeout(seconds).callbacks.append(lambda _e: self._stage_over(move))

    def _lost(self, move: _Move) -> str | None:
        """Why the request can no longer move, checked when a live stage ends."""
        req = move.req
        assert req is not None
        if req.phase == rq.DONE:
            return "request finished"
        if req.evictions != move.watch[1] or req.instance is not move.src:
            return "request evicted"
        if req.preemptions != move.watch[0] or req.phase != rq.DECODING:
            return "request preempted"
        if move.dst.state != READY:
            return "destination not ready"
        return None

    def _stage_over(self, move: _Move) -> None:
        """A live copy ended: the source decides at its next boundary; a source that has
        stopped meanwhile (it drained once the request finished) never will."""
        if move.src.state == STOPPED:
            move.stage_end = math.nan
            self._abort(move, "request finished")
        else:
            move.src.wake()

    def _land(self, move: _Move) -> None:
        """The final copy arrived: the destination owns the request's blocks."""
        req = move.req
        assert req is not None
        del self.in_transfer[req.request_id]
        self._finish(move)
        move.src.cancel_reserved(req.request_id)
        move.dst.commit_reserved(req.request_id)
        move.dst.when_decoding(req, lambda t: self._resumed(move, t, move.copied))
        move.dst.adopt_running(req)

    def _resumed(self, move: _Move, when: float, blocks: int) -> None:
        req = move.req
        assert req is not None
        req.migrations += 1
        self._event(MIGRATE_DONE, move.dst, req.request_id, self.settings.mode,
                    f"src={move.src.instance_id};stages={move.stage};blocks={blocks};"
                    f"downtime_s={when - move.stopped_at:.6g}")

    def _finish(self, move: _Move) -> None:
        if move.counted:
            self._count(move, -1)
            move.counted = False
        if move.req is not None:
            self._moving.pop(move.req.request_id, None)
        self._done_with(move)

    def _abort(self, move: _Move, why: str) -> None:
        rid = -1 if move.req is None else move.req.request_id
        if move.req is not None:
            move.dst.cancel_reserved(rid)
        self._finish(move)
        self._event(MIGRATE_ABORT, move.src, rid, why, move.detail(stage=move.stage))

    def close(self) -> None:
        """The run is over: abort every move that still holds a reservation on its destination
        (a live stage in flight), so that no KV blocks stay reserved in the final state. A
        request that finished during its last live stage ends a run before the stage does, and
        no source boundary comes to notice it; a stopped request whose final copy is under way
        stays in ``in_transfer`` and is reported unfinished."""
        for moves in list(self._by_source.values()):
            for move in list(moves):
                if move.req is not None:
                    self._abort(move, "run ended")

    def _event(self, kind, inst: "Instance | None", rid: int, reason: str, detail: str) -> None:
        self.events.emit(kind, inst.pool if inst else "", inst.instance_id if inst else "",
                         rid, reason, detail)


@applies(Migrate)
def _migrate(cluster: "Cluster", action: Migrate) -> None:
    cluster.migrations.submit(action, cluster.instance(action.src), cluster.instance(action.dst))
