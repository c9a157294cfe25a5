"""Fused groups: KunServe's parameter drop, pipelined serving and restore (issue 10 item 1).

What a fused group IS here
--------------------------
A group of g ready instances of one pool, led by the first one named in
:class:`~chironsim.contract.actions.DropParameters`. While fused, the **leader** is the group:
it keeps its SimPy loop, local scheduler and allocator, and

- its allocator is resized (:meth:`KVBlockAllocator.resize`) to the group's fused capacity
  ``chironsim.perf.drop.fused_kv_capacity_blocks`` (C_after = g·M_kv/κ + (g−1)·W/κ; W the
  per-layer weights: the embeddings, LM head and final norm stay on every member and are not
  dropped), and every follower's allocator to 0 blocks. The group's KV is one logical
  allocator, so conservation is the allocator's own invariant (every block owned by one
  request, one reservation or the free list, on exactly one instance) — the followers hold
  none while fused, and get their original capacity back, empty, at the split;
- its iteration time is swapped for the pipelined price (:func:`pipelined_iteration_time`):
  one engine iteration of the leader is one steady-state *round* of the g-stage pipeline, in
  which each of g micro-batches advances one iteration. The batch the scheduler chose is split
  into g balanced micro-batches (prefill tokens cut evenly, i.e. long prompts chunked across
  micro-batches; decodes split ⌈d/g⌉/⌊d/g⌋ with their context in proportion, which is where
  moving (max − min)/2 decodes leads); a round takes ``perf.pipeline.cycle_time`` (stage times
  + one activation hop per boundary, bubbles included when micro-batches are unequal), or
  exactly ``micro_batch_time`` (Σ stage times + (g−1) hops) when only one micro-batch has
  work. Tokens of a round are stamped at its end — for the micro-batches that leave the last
  stage earlier, at most one round late (a stated approximation of the staggered schedule);
- fast-forward is off on the leader while fused (correctness over speed: every round is
  stepped), so fast-forward on and off give identical tables with groups running.

**Followers** are in the ``fused`` lifecycle state: billed (they stay live instances), visible
in views with that state, never routed to (only ``ready`` instances are), never drained or
scaled down (the cluster skips group members).

Drop (:class:`~chironsim.contract.actions.DropParameters`), at an iteration boundary of every
member: each follower, at its next boundary with no swapped request, no request arriving by
migration and no reservation, detaches its waiting and running requests (running ones are
*stale*: this step recomputes them — KV exchange is the next step) and parks in ``fused``;
once every follower has parked, the leader at its next boundary (same conditions) detaches its
own, resizes every allocator, swaps its iteration time and adopts all the detached requests
(events ``drop``). Requests held between a follower's park and the leader's fuse are returned by
:meth:`FusionCoordinator.held_requests` at the horizon.

Restore (:class:`~chironsim.contract.actions.RestoreParameters`): the members reload the dropped
layers from their peers while the group keeps serving, for ``perf.exchange.restore_seconds``
(event ``restore``); then, at the leader's next boundary, its requests are detached (running
ones recompute), the leader and followers get their capacity and iteration time back, the
followers become ``ready``, and the requests are placed again through the cluster's router
before the boundary's admission, so the leader admits its share at once (event ``split``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import simpy

from chironsim.contract.actions import DropParameters, RestoreParameters
from chironsim.contract.states import FUSED, READY, STOPPED
from chironsim.perf.efficiency import comm_for_gpu
from chironsim.perf.pipeline import cycle_time, hop_time, micro_batch_time, stage_layers, stage_times
from chironsim.perf.roofline import IterationTimeModel
from chironsim.sim import request as rq
from chironsim.sim.actions import applies
from chironsim.sim.engine.stretch import GROWTH
from chironsim.sim.events import INSTANCE, EventLog, event_kind
from chironsim.sim.request import Request

if TYPE_CHECKING:
    from chironsim.perf.comm import CommModel
    from chironsim.sim.cluster import Cluster
    from chironsim.sim.instance import Instance

DROP = event_kind("drop", INSTANCE, "the policy's reason",
                  "members, blocks before->after, stale requests and how they were handled")
RESTORE = event_kind("restore", INSTANCE, "the policy's reason", "members, reload seconds")
SPLIT = event_kind("split", INSTANCE, "restore done", "members, requests placed again")


def split_evenly(total: int, parts: int) -> list[int]:
    """``total`` cut into ``parts`` integers differing by at most one, larger first."""
    base, extra = divmod(total, parts)
    return [base + (i < extra) for i in range(parts)]


def pipelined_iteration_time(timer: IterationTimeModel, comm: "CommModel", group_size: int,
                             same_node: bool = True) -> Callable:
    """The iteration-time function of a fused group's leader: one pipeline round of the batch
    cut into ``group_size`` balanced micro-batches (see the module docstring). Scalars only."""
    layers = stage_layers(timer.model.num_layers, group_size)
    hidden = timer.model.hidden_size

    def price(prefill_tokens, prefill_attention_work, decode_seqs, decode_context) -> float:
        pts = split_evenly(int(prefill_tokens), group_size)
        dss = split_evenly(int(decode_seqs), group_size)
        batches = []
        for pt, ds in zip(pts, dss):
            if pt == 0 and ds == 0:
                continue
            paw = prefill_attention_work * pt / prefill_tokens if pt else 0.0
            dc = decode_context * ds / decode_seqs if ds else 0
            batches.append((pt, paw, ds, dc))
        if not batches:
            return 0.0
        if len(batches) == 1:
            return float(micro_batch_time(timer, comm, layers, *batches[0], same_node=same_node))
        stages = [stage_times(timer, layers, *b) for b in batches]
        hops = [hop_time(comm, b[0] + b[2], hidden, same_node) for b in batches]
        return float(cycle_time(stages, hops))

    return price


@dataclass(eq=False)
class FusedGroup:
    """One group: its members (leader first) and what it must give back at the split."""

    members: list["Instance"]
    reason: str
    phase: str = "dropping"  # dropping -> fused -> restoring -> splitting
    parked: set[str] = field(default_factory=set)
    held: list[Request] = field(default_factory=list)  # detached, not yet adopted
    capacity: dict[str, tuple[int, int]] = field(default_factory=dict)  # id -> (blocks, watermark)
    stale: int = 0

    @property
    def leader(self) -> "Instance":
        return self.members[0]

    @property
    def name(self) -> str:
        return self.leader.instance_id

    def member_ids(self) -> str:
        return "+".join(m.instance_id for m in self.members)


def _quiet(inst: "Instance") -> bool:
    """No work an iteration boundary cannot hand over: nothing swapped out, nothing arriving
    by migration, no reservation (an incoming transfer)."""
    return not inst.swapped and not inst.arriving and not inst.kv.has_reservations


class FusionCoordinator:
    """The cluster's fused groups; a boundary mechanism on members while they change shape."""

    def __init__(self, env: simpy.Environment, events: EventLog,
                 fused_blocks: Callable[["Instance", int], int],
                 pipelined_time: Callable[["Instance", int], Callable],
                 restore_seconds: Callable[["Instance", int], float],
                 place: Callable[[Request], None]) -> None:
        self.env = env
        self.events = events
        self._fused_blocks = fused_blocks
        self._pipelined_time = pipelined_time
        self._restore_seconds = restore_seconds
        self._place = place
        self.groups: dict[str, FusedGroup] = {}  # by leader id
        self._member_of: dict[str, FusedGroup] = {}
        self._saved: dict[str, tuple[Callable, bool]] = {}  # leader id -> (iteration time, ff)

    # --- queries ---------------------------------------------------------------------------
    def holds(self, inst: "Instance") -> bool:
        """Whether ``inst`` belongs to a group (not to be drained or scaled down)."""
        return inst.instance_id in self._member_of

    def group_of(self, instance_id: str) -> str:
        group = self._member_of.get(instance_id)
        return "" if group is None else group.name

    def held_requests(self) -> list[Request]:
        """Requests detached by a drop and not yet adopted by the leader (at the horizon)."""
        return [r for g in self.groups.values() for r in g.held]

    # --- actions ---------------------------------------------------------------------------
    def drop(self, members: list["Instance"], reason: str) -> bool:
        if len(members) < 2 or len({m.pool for m in members}) != 1:
            return False
        if any(m.state != READY or self.holds(m) for m in members):
            return False
        group = FusedGroup(members, reason)
        self.groups[group.name] = group
        for m in members:
            self._member_of[m.instance_id] = group
            self._attach(m)
            m.wake()
        return True

    def restore(self, leader_id: str, reason: str) -> bool:
        group = self.groups.get(leader_id)
        if group is None or group.phase != "fused":
            return False
        group.phase = "restoring"
        seconds = self._restore_seconds(group.leader, len(group.members))
        self.events.emit(RESTORE, group.leader.pool, group.name, -1, reason,
                         f"{group.member_ids()}, {seconds:.6g} s")

        def reload():
            yield self.env.timeout(seconds)
            group.phase = "splitting"
            self._attach(group.leader)
            group.leader.wake()
        self.env.process(reload())
        return True

    # --- boundary mechanism ----------------------------------------------------------------
    def at_boundary(self, inst: "Instance", step: int) -> float:
        group = self._member_of.get(inst.instance_id)
        if group is None:
            self._detach(inst)
            return 0.0
        if group.phase == "dropping":
            if inst is not group.leader:
                if inst.instance_id not in group.parked and _quiet(inst):
                    self._park(group, inst, step)
            elif len(group.parked) == len(group.members) - 1 and _quiet(inst):
                self._fuse(group, inst, step)
        elif group.phase == "splitting" and inst is group.leader and _quiet(inst):
            cap, _ = group.capacity[inst.instance_id]
            if inst.kv.owned(GROWTH) <= cap:
                self._split(group, inst, step)
        return 0.0

    def _take_all(self, group: FusedGroup, inst: "Instance") -> list[Request]:
        """Detach every running and waiting request of ``inst`` (running ones lose their KV
        and will recompute), in a fixed order: decoding, prefilling, then waiting."""
        out = []
        for req in list(inst.running_requests()):
            if req.phase == rq.DECODING or req.phase == rq.PREFILLING:
                group.stale += 1
            inst.detach(req, save_kv=False)
            out.append(req)
        for req in [r for _, r in sorted(inst.waiting)]:
            inst.detach(req, save_kv=False)
            out.append(req)
        return out

    def _park(self, group: FusedGroup, inst: "Instance", step: int) -> None:
        group.held.extend(self._take_all(group, inst))
        group.parked.add(inst.instance_id)
        inst.set_fused()
        self._detach(inst)
        group.leader.wake()

    def _fuse(self, group: FusedGroup, leader: "Instance", step: int) -> None:
        stale_before = group.stale
        taken = self._take_all(group, leader)
        g = len(group.members)
        before = sum(m.kv.capacity for m in group.members)
        for m in group.members:
            group.capacity[m.instance_id] = (m.kv.capacity, m.kv.watermark)
        for m in group.members[1:]:
            m.resize_kv(0)
        blocks = self._fused_blocks(leader, g)
        leader.resize_kv(blocks)
        self._saved[leader.instance_id] = leader.swap_iteration_time(
            self._pipelined_time(leader, g), fast_forward=False)
        held, group.held = group.held, []
        for req in taken + held:
            leader.adopt(req)
        group.phase = "fused"
        self._detach(leader)
        self.events.emit(DROP, leader.pool, leader.instance_id, -1, group.reason,
                         f"{group.member_ids()}, blocks {before}->{blocks}, "
                         f"{group.stale} stale recomputed ({group.stale - stale_before} on the leader)")

    def _split(self, group: FusedGroup, leader: "Instance", step: int) -> None:
        taken = self._take_all(group, leader)
        fn, ff = self._saved.pop(leader.instance_id)
        leader.swap_iteration_time(fn, fast_forward=ff)
        for m in group.members:
            blocks, watermark = group.capacity[m.instance_id]
            m.resize_kv(blocks, watermark)
        for m in group.members[1:]:
            if m.state == FUSED:
                m.set_ready()
        del self.groups[group.name]
        for m in group.members:
            self._member_of.pop(m.instance_id, None)
        self._detach(leader)
        for req in taken:  # before this boundary's admission, so the leader admits its share
            self._place(req)
        self.events.emit(SPLIT, leader.pool, leader.instance_id, -1, "restore done",
                         f"{group.member_ids()}, {len(taken)} requests placed again")

    def _attach(self, inst: "Instance") -> None:
        if self not in inst.mechanisms:
            inst.mechanisms = (*inst.mechanisms, self)

    def _detach(self, inst: "Instance") -> None:
        inst.mechanisms = tuple(m for m in inst.mechanisms if m is not self)


def same_node(gpu_per_node: int, tp: int, group_size: int) -> bool:
    """Whether a group's stages share one node (NVLink hops) or cross nodes."""
    return tp * group_size <= gpu_per_node


def comm_of(timer: IterationTimeModel) -> "CommModel":
    return timer.comm if timer.comm is not None else comm_for_gpu(timer.gpu)


@applies(DropParameters)
def _drop(cluster: "Cluster", action: DropParameters) -> None:
    members = [cluster.instance(i) for i in action.instances]
    if any(m is None or m.state == STOPPED for m in members):
        return
    cluster.fusion.drop(members, action.reason)


@applies(RestoreParameters)
def _restore(cluster: "Cluster", action: RestoreParameters) -> None:
    cluster.fusion.restore(action.group, action.reason)
