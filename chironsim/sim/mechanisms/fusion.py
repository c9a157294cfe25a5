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
- its rounds are priced per micro-batch queue (:mod:`chironsim.sim.mechanisms.microbatch`):
  one engine iteration of the leader is one steady-state *round* of the g-stage pipeline, in
  which each of g micro-batches advances one iteration. The leader keeps g micro-batch queues:
  a request joins the one with the fewest unfinished requests the first round it is in
  (admission, or adoption), decodes are rebalanced before each round by moving
  ⌊(max − min)/2⌋ of them from the fullest queue to the emptiest, and the round's prefill
  chunks (the scheduler's, under the group's token budget) are shared so the queues' token
  counts balance, a long prompt's chunk spilling from its own queue into the others. Each
  queue's micro-batch carries its own decodes with their own context; a round takes
  ``perf.pipeline.cycle_time`` of them (stage times + one activation hop per boundary,
  bubbles included when they are unequal), or exactly ``micro_batch_time`` (Σ stage times +
  (g−1) hops) when only one queue has work. The leader's planner calls the queues' price
  with the round's requests (``Instance.swap_iteration_time``'s ``batch_time``);
- its batch limits are resized (:meth:`Instance.resize_limits`) to the group's: the sum of
  the members' ``max_num_seqs`` and of their ``max_num_batched_tokens``, i.e. g x one
  engine's (:func:`group_limits`). The released code keeps one scheduler per member, each
  with its own limits, so a pair runs up to 2 x 256 sequences. The token budget scales with
  g too: each of a round's g micro-batches is one member's iteration, bounded by that
  member's budget B, so a round carries up to g·B tokens, and the queues' balanced token
  counts give each micro-batch about total/g of them, B at most. This leaves the group's prefill throughput
  about where it was (a stage runs a round's tokens through L/g layers, so a round of g·B
  tokens takes about an unfused B-token iteration, and one of B tokens about a B/g-token
  one; prefill cost is nearly linear in tokens); what it sets is the granularity: a
  micro-batch of B tokens passes all g stages in about an unfused B-token iteration, as in
  the released code, where one engine's budget per round would cut micro-batches of B/g and
  deliver the first tokens of a deep queue's head sooner than the released code does.
  Requests already running above a lowered limit keep running, as with
  ``set_max_num_seqs``; a paused request keeps its seat (:meth:`Instance.seats_left`);
- fast-forward is off on the leader while fused (correctness over speed: every round is
  stepped), so fast-forward on and off give identical tables with groups running.

**What the queues approximate.** One scheduler still decides the round for the whole group
(admission by priority then FCFS, chunking under the token budget, preemption, KV), and the
queues decide only how the round is cut; KunServe schedules each queue on its own. And tokens
are stamped at the round's end for every micro-batch: a micro-batch that leaves the last stage
earlier in the round has its tokens (a first token, a finish) stamped up to one round late
(median fused rounds of tens of ms; REPORT, "Explicit micro-batch queues"). Stamping each
micro-batch at its own exit would need the leader's loop to commit a round in g parts (the
decode set advances every member at one step), which it does not.

**Limits and a policy that changes them** (Chiron's local autoscaler, ``SetMaxNumSeqs``).
While fused, the leader's limits *are* the group's, and that is what views show: a change to
the leader's ``max_num_seqs`` meanwhile changes the group's. At the split the leader gets
``current x own // fused`` (at least 1; :func:`limits_after_split`), ``own`` and ``fused``
being its own and the group's limits at the fuse: exactly its own when nothing changed them,
the same relative change when something did (a halved group limit halves the leader's). A
follower's limits are its own throughout and untouched (it schedules nothing while fused; a
change to them takes effect at the split, and does not change the group's limit). Converted
requests are placed only on members with a seat under these post-split limits, so no member
starts independent life above its limit.

**Followers** are in the ``fused`` lifecycle state: billed (they stay live instances), visible
in views with that state, never routed to (only ``ready`` instances are), never drained or
scaled down (the cluster skips group members).

Drop (:class:`~chironsim.contract.actions.DropParameters`), at an iteration boundary of every
member: each follower, at its next boundary with no swapped request, no request arriving by
migration and no reservation, detaches its waiting requests and those mid-prefill (they
re-prefill on the leader), *pauses* its decoding ones with their KV kept (the **stale**
requests; :meth:`Instance.pause`) and parks in ``fused``. Once every follower has parked, the
leader at its next boundary (same conditions) does the same with its own, resizes every
allocator (its own first; each follower's paused requests hand their blocks to the leader's
allocator, then the follower goes to 0), swaps its iteration time and limits, and adopts all
the detached requests (event ``drop``). The stale requests then get their KV exchanged
(``stale_requests``):

- ``live`` (default): one step of at most ``exchange_batch_size`` requests at a time, started
  at a leader boundary and overlapped with the rounds, priced by
  ``perf.exchange.kv_exchange_seconds`` (event ``exchange``, reason ``stale``); a request stays
  paused, out of the batch, until its step lands, then rejoins the leader's batch where it
  left off;
- ``blocking``: every step runs before the first round, its seconds added to it;
- ``recompute``: no exchange; the stale requests are detached (their KV freed) and re-prefill.

Requests held between a follower's park and the leader's fuse are returned by
:meth:`FusionCoordinator.held_requests` at the horizon.

Restore (:class:`~chironsim.contract.actions.RestoreParameters`): the members reload the dropped
layers from their peers while the group keeps serving, for ``perf.exchange.restore_seconds``
(event ``restore``). Then the leader *converts* its decoding requests back (not in
``recompute`` mode): at each boundary with no step in flight, up to ``restore_batch_size`` of
them (every one at once in ``blocking`` mode) are assigned, by request id, to the member with
the fewest blocks assigned among those with room for the request's whole sequence and a seat
under its post-split limit; they pause while their KV is exchanged (event ``exchange``, reason
``convert``) and then decode in the group again until the split; a request that fits no member
yet waits for others to finish. Once every decoding request is converted, the **split**, at
that boundary: requests mid-prefill and waiting are detached; the leader gets back its
iteration time, its limits (rule above) and its capacity, the followers their capacity, empty;
each converted request assigned to a follower moves there with its KV and keeps decoding (those
assigned to the leader stay); the followers become ``ready``; and the detached requests (in
``recompute`` mode the decoding ones too) are placed again through the cluster's router before
the boundary's admission, so the leader admits its share at once (event ``split``).
"""

from __future__ import annotations

from collections import deque
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
from chironsim.sim.config import FusionConfig
from chironsim.sim.events import INSTANCE, EventLog, event_kind
from chironsim.sim.request import Request

if TYPE_CHECKING:
    from chironsim.perf.comm import CommModel
    from chironsim.sim.cluster import Cluster
    from chironsim.sim.instance import Instance

DROP = event_kind("drop", INSTANCE, "the policy's reason",
                  "members, blocks before->after, stale requests and how they were handled")
RESTORE = event_kind("restore", INSTANCE, "the policy's reason", "members, reload seconds")
EXCHANGE = event_kind("exchange", INSTANCE, "'stale' (after a drop) or 'convert' (restore)",
                      "members; requests, tokens, seconds and start of one exchange step")
SPLIT = event_kind("split", INSTANCE, "restore done", "members, requests placed again")


def split_evenly(total: int, parts: int) -> list[int]:
    """``total`` cut into ``parts`` integers differing by at most one, larger first."""
    base, extra = divmod(total, parts)
    return [base + (i < extra) for i in range(parts)]


def pipelined_iteration_time(timer: IterationTimeModel, comm: "CommModel", group_size: int,
                             same_node: bool = True) -> Callable:
    """One pipeline round of a batch known only by its totals, cut into ``group_size``
    balanced micro-batches: prefill tokens and decodes split evenly (larger parts first), the
    attention work and decode context in proportion. A fused leader prices its rounds from its
    micro-batch queues instead (:mod:`.microbatch`); this is their price of a stretch (none is
    planned while fused) and the even cut to compare them with. Scalars only."""
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
    """One group: its members (leader first), its settings, and what it must give back at
    the split."""

    members: list["Instance"]
    reason: str
    mode: str = "live"  # stale requests: live | blocking | recompute
    exchange_batch: int = 8
    restore_batch: int = 8
    phase: str = "dropping"  # dropping -> fused -> restoring -> converting -> (split)
    parked: set[str] = field(default_factory=set)
    held: list[Request] = field(default_factory=list)  # detached, not yet adopted
    capacity: dict[str, tuple[int, int]] = field(default_factory=dict)  # id -> (blocks, watermark)
    stale: deque[Request] = field(default_factory=deque)  # paused on the leader, not exchanged
    in_flight: list[Request] = field(default_factory=list)  # paused, their exchange under way
    converted: dict[int, tuple[Request, "Instance"]] = field(default_factory=dict)
    stale_count: int = 0
    #: The leader's own (max_num_seqs, max_batched_tokens) and the group's, set at the fuse.
    limits: tuple[tuple[int, int], tuple[int, int]] = ((0, 0), (0, 0))

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


def group_limits(members: list["Instance"]) -> tuple[int, int]:
    """A fused group's batch limits: the sum of its members' ``max_num_seqs`` and
    ``max_num_batched_tokens`` (g x one engine's when they agree; module docstring)."""
    return (sum(m.max_num_seqs for m in members), sum(m.max_batched_tokens for m in members))


def limits_after_split(group: FusedGroup) -> tuple[int, int]:
    """The leader's own limits at the split: the group's current ones scaled by the share the
    leader brought at the fuse, so exactly its own when nothing changed them meanwhile, and
    the same relative change when a policy did (module docstring)."""
    (own_seqs, own_tokens), (seqs, tokens) = group.limits
    leader = group.leader
    return (max(1, leader.max_num_seqs * own_seqs // seqs),
            max(1, leader.max_batched_tokens * own_tokens // tokens))


def whole_sequence_blocks(req: Request, block_size: int) -> int:
    """Blocks ``req`` holds when it finishes: what a member must have room for to take it."""
    return -(-(req.prompt_tokens + req.output_tokens) // block_size)


class FusionCoordinator:
    """The cluster's fused groups; a boundary mechanism on members while they change shape."""

    def __init__(self, env: simpy.Environment, events: EventLog,
                 fused_blocks: Callable[["Instance", int], int],
                 pipelined_time: Callable[["Instance", int], Callable],
                 restore_seconds: Callable[["Instance", int], float],
                 exchange_seconds: Callable[["Instance", int, list[int], int], float],
                 place: Callable[[Request], None], settings: FusionConfig = FusionConfig()) -> None:
        self.env = env
        self.events = events
        self._fused_blocks = fused_blocks
        self._pipelined_time = pipelined_time
        self._restore_seconds = restore_seconds
        self._exchange_seconds = exchange_seconds
        self._place = place
        self.settings = settings
        self.groups: dict[str, FusedGroup] = {}  # by leader id
        self._member_of: dict[str, FusedGroup] = {}
        self._saved: dict[str, tuple] = {}  # leader id -> swap_iteration_time's arguments

    # --- queries ---------------------------------------------------------------------------
    def holds(self, inst: "Instance") -> bool:
        """Whether ``inst`` belongs to a group (not to be drained or scaled down)."""
        return inst.instance_id in self._member_of

    def group_of(self, instance_id: str) -> str:
        """The leader id of the group ``instance_id`` belongs to, or ''."""
        group = self._member_of.get(instance_id)
        return "" if group is None else group.name

    def held_requests(self) -> list[Request]:
        """Requests detached by a drop and not yet adopted by the leader (at the horizon)."""
        return [r for g in self.groups.values() for r in g.held]

    # --- actions ---------------------------------------------------------------------------
    def drop(self, members: list["Instance"], reason: str, mode: str | None = None,
             exchange_batch: int | None = None) -> bool:
        if len(members) < 2 or len({m.pool for m in members}) != 1:
            return False
        if any(m.state != READY or self.holds(m) for m in members):
            return False
        s = self.settings
        group = FusedGroup(members, reason, mode or s.stale_requests,
                           exchange_batch or s.exchange_batch_size, s.restore_batch_size)
        self.groups[group.name] = group
        for m in members:
            self._member_of[m.instance_id] = group
            m.group = group.name
            self._attach(m)
            m.wake()
        return True

    def restore(self, leader_id: str, reason: str, batch_size: int | None = None) -> bool:
        group = self.groups.get(leader_id)
        if group is None or group.phase != "fused":
            return False
        group.phase = "restoring"
        if batch_size is not None:
            group.restore_batch = batch_size
        seconds = self._restore_seconds(group.leader, len(group.members))
        self.events.emit(RESTORE, group.leader.pool, group.name, -1, reason,
                         f"{group.member_ids()}, {seconds:.6g} s")

        def reload():
            yield self.env.timeout(seconds)
            group.phase = "converting"
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
                    self._park(group, inst)
            elif len(group.parked) == len(group.members) - 1 and _quiet(inst):
                return self._fuse(group, inst)
            return 0.0
        if inst is not group.leader or group.in_flight:
            return 0.0
        if group.stale:
            return self._next_stale(group, inst)
        if group.phase in ("fused", "restoring"):
            self._detach(inst)  # nothing to exchange; restore attaches it again
        elif group.phase == "converting" and _quiet(inst):
            seconds = self._convert(group, inst) if group.mode != "recompute" else None
            if seconds is None:
                self._split(group, inst)
                return 0.0
            return seconds
        return 0.0

    def _take(self, group: FusedGroup, inst: "Instance") -> list[Request]:
        """Detach ``inst``'s waiting requests and those mid-prefill (they re-prefill), and
        pause its decoding ones with their KV — or, in ``recompute`` mode, detach them too
        (their KV is freed). In a fixed order: decoding, prefilling, then waiting."""
        out = []
        for req in list(inst.running_requests()):
            if req.phase == rq.DECODING:
                group.stale_count += 1
                if group.mode != "recompute":
                    inst.pause(req)
                    continue
            inst.detach(req, save_kv=False)
            out.append(req)
        for req in [r for _, r in sorted(inst.waiting)]:
            inst.detach(req, save_kv=False)
            out.append(req)
        inst.settle_growth()
        return out

    def _park(self, group: FusedGroup, inst: "Instance") -> None:
        group.held.extend(self._take(group, inst))
        group.parked.add(inst.instance_id)
        inst.set_fused()
        self._detach(inst)
        group.leader.wake()

    def _fuse(self, group: FusedGroup, leader: "Instance") -> float:
        stale_before = group.stale_count
        taken = self._take(group, leader)
        g = len(group.members)
        before = sum(m.kv.capacity for m in group.members)
        for m in group.members:
            group.capacity[m.instance_id] = (m.kv.capacity, m.kv.watermark)
        blocks = self._fused_blocks(leader, g)
        leader.resize_kv(blocks)  # first: at least g x a member's, so every stale block fits
        stale = list(leader.paused.values())
        for m in group.members[1:]:
            for req in list(m.paused.values()):
                m.give_paused(req, leader)
                stale.append(req)
            m.resize_kv(0)
        price = self._pipelined_time(leader, g)
        self._saved[leader.instance_id] = leader.swap_iteration_time(
            price, fast_forward=False, batch_time=getattr(price, "batch_time", None))
        fused_limits = group_limits(group.members)
        group.limits = (leader.resize_limits(*fused_limits), fused_limits)
        held, group.held = group.held, []
        for req in taken + held:
            leader.adopt(req)
        group.phase = "fused"
        group.stale.extend(stale)
        handled = "recomputed" if group.mode == "recompute" else f"kept ({group.mode} exchange)"
        self.events.emit(DROP, leader.pool, leader.instance_id, -1, group.reason,
                         f"{group.member_ids()}, blocks {before}->{blocks}, {group.stale_count} "
                         f"stale {handled} ({group.stale_count - stale_before} on the leader)")
        if group.mode == "blocking" and group.stale:
            seconds = 0.0
            while group.stale:
                seconds += self._next_stale(group, leader)
            return seconds
        if not group.stale:
            self._detach(leader)
            return 0.0
        return self._next_stale(group, leader)  # the first step starts now: nothing else may wake it

    def _next_stale(self, group: FusedGroup, leader: "Instance") -> float:
        reqs = [group.stale.popleft() for _ in range(min(len(group.stale), group.exchange_batch))]
        return self._exchange(group, leader, reqs, "stale")

    def _exchange(self, group: FusedGroup, leader: "Instance", reqs: list[Request], why: str) -> float:
        """Move the KV of ``reqs`` (paused on the leader) between the members: one step of at
        most a batch, priced by ``perf.exchange.kv_exchange_seconds``. Live: they rejoin the
        batch once it lands; blocking: at once, its seconds added to this iteration."""
        batch = group.exchange_batch if why == "stale" else group.restore_batch
        tokens = [r.prompt_tokens + r.generated for r in reqs]
        seconds = float(self._exchange_seconds(leader, len(group.members), tokens, batch))
        start = self.env.now
        detail = (f"{group.member_ids()};requests={len(reqs)};tokens={sum(tokens)};"
                  f"seconds={seconds!r};start={start!r}")
        if group.mode == "blocking":
            for r in reqs:
                leader.adopt_running(r)
            self.events.emit(EXCHANGE, leader.pool, leader.instance_id, -1, why, detail)
            return seconds
        group.in_flight = reqs

        def land(_event) -> None:
            group.in_flight = []
            for r in reqs:
                leader.adopt_running(r)
            self.events.emit(EXCHANGE, leader.pool, leader.instance_id, -1, why, detail)
        self.env.timeout(seconds).callbacks.append(land)
        return 0.0

    def _convert(self, group: FusedGroup, leader: "Instance") -> float | None:
        """One restore step: convert up to a batch of decoding requests back to the members
        with room for their whole sequence and a seat under their limit after the split. None
        when every one is converted (split now)."""
        for rid, (req, _) in list(group.converted.items()):
            if req.phase == rq.DONE or req.instance is not leader:
                del group.converted[rid]
        pending = sorted((r for r in leader.decodes.members.values()
                          if r.request_id not in group.converted), key=lambda r: r.request_id)
        if not pending:
            return None
        assigned = {m.instance_id: 0 for m in group.members}
        seated = {m.instance_id: 0 for m in group.members}
        for req, member in group.converted.values():
            assigned[member.instance_id] += whole_sequence_blocks(req, leader.block_size)
            seated[member.instance_id] += 1
        room = {m.instance_id: group.capacity[m.instance_id][0] - group.capacity[m.instance_id][1]
                for m in group.members}
        seats = {m.instance_id: m.max_num_seqs for m in group.members[1:]}
        seats[leader.instance_id] = limits_after_split(group)[0]
        limit = group.restore_batch if group.mode == "live" else len(pending)
        chosen: list[Request] = []
        for req in pending:
            if len(chosen) == limit:
                break
            need = whole_sequence_blocks(req, leader.block_size)
            fits = [m for m in group.members if assigned[m.instance_id] + need <= room[m.instance_id]
                    and seated[m.instance_id] < seats[m.instance_id]]
            if not fits:
                continue
            member = min(fits, key=lambda m: assigned[m.instance_id])  # ties: member order
            assigned[member.instance_id] += need
            seated[member.instance_id] += 1
            group.converted[req.request_id] = (req, member)
            chosen.append(req)
        if not chosen:
            return 0.0  # nothing fits a member yet: wait for requests to finish
        for req in chosen:
            leader.pause(req)
        if group.mode == "live":
            return self._exchange(group, leader, chosen, "convert")
        batches = [chosen[i:i + group.restore_batch] for i in range(0, len(chosen), group.restore_batch)]
        return sum(self._exchange(group, leader, b, "convert") for b in batches)

    def _split(self, group: FusedGroup, leader: "Instance") -> None:
        taken = []
        for req in list(leader.running_requests()):  # decoding (recompute mode) or mid-prefill
            if req.phase == rq.PREFILLING or group.mode == "recompute":
                leader.detach(req, save_kv=False)
                taken.append(req)
        for req in [r for _, r in sorted(leader.waiting)]:
            leader.detach(req, save_kv=False)
            taken.append(req)
        moving = []
        for req in list(leader.decodes.members.values()):
            member = group.converted[req.request_id][1]
            if member is not leader:
                leader.pause(req)
                moving.append((req, member))
        leader.settle_growth()
        leader.swap_iteration_time(*self._saved.pop(leader.instance_id))
        leader.resize_limits(*limits_after_split(group))
        for m in group.members[1:]:  # followers first: the leader's blocks move there
            m.resize_kv(*group.capacity[m.instance_id])
        for req, member in moving:
            leader.give_paused(req, member)
            member.adopt_running(req)
        leader.resize_kv(*group.capacity[leader.instance_id])
        for m in group.members[1:]:
            if m.state == FUSED:
                m.set_ready()
        del self.groups[group.name]
        for m in group.members:
            self._member_of.pop(m.instance_id, None)
            m.group = ""
        self._detach(leader)
        for req in taken:  # before this boundary's admission, so the leader admits its share
            self._place(req)
        self.events.emit(SPLIT, leader.pool, leader.instance_id, -1, "restore done",
                         f"{group.member_ids()}, {len(moving)} requests moved with their KV, "
                         f"{len(taken)} placed again")

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
    cluster.fusion.drop(members, action.reason, action.stale_requests, action.exchange_batch_size)


@applies(RestoreParameters)
def _restore(cluster: "Cluster", action: RestoreParameters) -> None:
    cluster.fusion.restore(action.group, action.reason, action.batch_size)
