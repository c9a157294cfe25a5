"""A fused group's g micro-batch queues, and the price of one pipeline round of them.

KunServe keeps g micro-batch queues in a fused group (issue 10 item 1/2; reference/README.md,
KunServe; evidence in reference/llumnix_kunserve.md B.1-B.2). Here the fused leader keeps one
scheduler (admission, chunking under the group's token budget, preemption, KV) and these
queues decide how each round's batch is cut into micro-batches:

- **Queue of a request.** A request joins the queue with the fewest unfinished requests
  (:func:`pick_queue`; ties: lower index) the first time it is in one of the leader's rounds
  (its admission, or its first round on the leader after an adoption or an exchange), and
  stays there until it finishes or leaves the leader. Unfinished: assigned and still on the
  leader (decoding, prefilling or paused while its KV is exchanged).
- **Decode rebalancing.** Before each round (so after the previous one), when the queues'
  decode counts differ by more than one, ⌊(max − min)/2⌋ decodes move from the fullest queue
  to the emptiest (:func:`rebalance_decodes`), the most recently numbered first.
- **Prefill chunks.** A round's prefill tokens (the chunks the scheduler chose) are shared so
  the queues' token counts (decodes + prefill tokens) come out as equal as they can
  (:func:`water_fill`): each chunk fills its own queue's share first and the rest of it
  spills into the other queues' shares, lower index first. So a long prompt is chunked
  across micro-batches. Its pieces take its positions in queue order (the earliest in the
  lowest-indexed micro-batch, which runs first on every stage, so each piece finds the KV of
  the ones before it), each with the attention work of its positions (the pieces' work adds
  up to the whole chunk's).
- **Price.** Each queue's micro-batch is (prefill tokens, their attention work, its decodes,
  their own context); empty ones are skipped. One non-empty micro-batch takes
  ``perf.pipeline.micro_batch_time`` (Σ stage times + (g−1) activation hops); several take
  ``perf.pipeline.cycle_time`` of them in queue order (the steady-state round, bubbles
  included when they are unequal).

Tokens are still stamped at the round's end for every micro-batch (see the fusion module).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from chironsim.perf.pipeline import cycle_time, hop_time, micro_batch_time, stage_layers, stage_times
from chironsim.perf.roofline import IterationTimeModel
from chironsim.sim import request as rq
from chironsim.sim.mechanisms.fusion import pipelined_iteration_time
from chironsim.sim.request import Request

if TYPE_CHECKING:
    from chironsim.perf.comm import CommModel
    from chironsim.sim.decode_set import DecodeSet
    from chironsim.sim.instance import Instance

#: A micro-batch: (prefill tokens, prefill attention work, decodes, decode context).
MicroBatch = tuple[int, float, int, int]


def pick_queue(unfinished: Sequence[int]) -> int:
    """The micro-batch queue with the fewest unfinished requests (ties: lower index)."""
    if not unfinished:
        raise ValueError("a group has at least one micro-batch queue")
    return min(range(len(unfinished)), key=lambda i: (unfinished[i], i))


def rebalance_decodes(decodes: Sequence[int]) -> tuple[int, int, int] | None:
    """(from queue, to queue, requests) moving ⌊(max − min)/2⌋ decodes from the fullest queue to
    the emptiest (ties: lower index); None when that is 0."""
    if not decodes:
        return None
    most = max(range(len(decodes)), key=lambda i: (decodes[i], -i))
    least = min(range(len(decodes)), key=lambda i: (decodes[i], i))
    moved = (decodes[most] - decodes[least]) // 2
    return (most, least, moved) if moved > 0 else None


def water_fill(loads: Sequence[int], extra: int) -> list[int]:
    """``extra`` tokens shared out over queues holding ``loads``: the least loaded are raised
    first, so ``loads[q] + share[q]`` come out as equal as integers allow (a remainder goes to
    the lower indices among the lowest). The shares add up to ``extra``."""
    order = sorted(range(len(loads)), key=lambda q: (loads[q], q))
    share = [0] * len(loads)
    left = extra
    n = 1
    while n <= len(order):
        if n < len(order):  # raise the n least loaded to the next one's level, if it suffices
            level = loads[order[n]]
            need = sum(level - loads[q] - share[q] for q in order[:n])
            if need <= left:
                for q in order[:n]:
                    share[q] = level - loads[q]
                left -= need
                n += 1
                continue
        base, rest = divmod(left, n)
        for i, q in enumerate(sorted(order[:n])):
            share[q] += base + (i < rest)
        return share
    return share


def pipeline_seconds(timer: IterationTimeModel, comm: "CommModel", layers: Sequence[int],
                     batches: Sequence[MicroBatch], same_node: bool = True) -> float:
    """One round of ``batches`` (in queue order; empty ones skipped) on the stages ``layers``:
    ``micro_batch_time`` for one, ``cycle_time`` for several, 0 for none."""
    batches = [b for b in batches if b[0] or b[2]]
    if not batches:
        return 0.0
    if len(batches) == 1:
        return float(micro_batch_time(timer, comm, layers, *batches[0], same_node=same_node))
    stages = [stage_times(timer, layers, *b) for b in batches]
    hops = [hop_time(comm, b[0] + b[2], timer.model.hidden_size, same_node) for b in batches]
    return float(cycle_time(stages, hops))


class MicroBatchQueues:
    """The g queues of one fused leader (module docstring). :meth:`batch_time` is what the
    leader's planner calls to price a round; :attr:`last` holds that round's micro-batches."""

    def __init__(self, timer: IterationTimeModel, comm: "CommModel", group_size: int,
                 same_node: bool = True, leader: "Instance | None" = None) -> None:
        self.timer = timer
        self.comm = comm
        self.g = group_size
        self.same_node = same_node
        self.layers = stage_layers(timer.model.num_layers, group_size)
        self.leader = leader
        self.queue_of: dict[int, tuple[Request, int]] = {}  # request id -> (request, queue)
        self.unfinished = [0] * group_size
        self.last: list[MicroBatch] = []
        self._totals = pipelined_iteration_time(timer, comm, group_size, same_node)

    def __call__(self, prefill_tokens, prefill_attention_work, decode_seqs, decode_context) -> float:
        """The price of a batch known only by its totals (the balanced cut of
        :func:`~chironsim.sim.mechanisms.fusion.pipelined_iteration_time`): what a stretch of
        pure-decode rounds would use; none is planned while fused (fast-forward is off)."""
        return self._totals(prefill_tokens, prefill_attention_work, decode_seqs, decode_context)

    # --- membership -------------------------------------------------------------------------
    def assign(self, req: Request) -> int:
        """Put ``req`` on the queue with the fewest unfinished requests; returns its index."""
        q = pick_queue(self.unfinished)
        self.queue_of[req.request_id] = (req, q)
        self.unfinished[q] += 1
        return q

    def prune(self) -> None:
        """Forget requests that finished or left the leader."""
        leader = self.leader
        gone = [rid for rid, (req, _) in self.queue_of.items()
                if req.phase == rq.DONE or req.instance is not leader]
        for rid in gone:
            _, q = self.queue_of.pop(rid)
            self.unfinished[q] -= 1

    def decode_counts(self, decodes: "DecodeSet") -> list[int]:
        counts = [0] * self.g
        queue_of = self.queue_of
        for rid in decodes.members:
            counts[queue_of[rid][1]] += 1
        return counts

    def rebalance(self, decodes: "DecodeSet") -> int:
        """Move ⌊(max − min)/2⌋ decodes from the fullest queue to the emptiest, the highest
        request ids first; returns how many moved."""
        move = rebalance_decodes(self.decode_counts(decodes))
        if move is None:
            return 0
        src, dst, n = move
        queue_of = self.queue_of
        moving = sorted((rid for rid in decodes.members if queue_of[rid][1] == src), reverse=True)[:n]
        for rid in moving:
            queue_of[rid] = (queue_of[rid][0], dst)
        self.unfinished[src] -= n
        self.unfinished[dst] += n
        return n

    # --- one round ----------------------------------------------------------------------------
    def micro_batches(self, step: int, chunks: Sequence[tuple[Request, int]],
                      decodes: "DecodeSet") -> list[MicroBatch]:
        """Round ``step``'s micro-batch of each queue, after assigning newcomers and
        rebalancing the decodes (module docstring)."""
        self.prune()
        queue_of = self.queue_of
        for rid, req in decodes.members.items():
            if rid not in queue_of:
                self.assign(req)
        for req, _ in chunks:
            if req.request_id not in queue_of:
                self.assign(req)
        self.rebalance(decodes)
        g = self.g
        ds, dc = [0] * g, [0] * g
        for rid, req in decodes.members.items():
            q = queue_of[rid][1]
            ds[q] += 1
            dc[q] += req.ctx_key + step  # its tokens needing KV in iteration ``step``
        quota = water_fill(ds, sum(n for _, n in chunks))
        pt, paw = [0] * g, [0.0] * g
        for req, n in chunks:
            own = queue_of[req.request_id][1]
            takes = [0] * g
            for q in (own, *(i for i in range(g) if i != own)):
                take = takes[q] = min(n, quota[q])
                quota[q] -= take
                n -= take
                if not n:
                    break
            pos = req.prefilled
            for q, take in enumerate(takes):  # positions in round order: causal at every stage
                if take:
                    pt[q] += take
                    paw[q] += take * (pos + take / 2)
                    pos += take
        return [(pt[q], paw[q], ds[q], dc[q]) for q in range(g)]

    def batch_time(self, step: int, chunks: Sequence[tuple[Request, int]], decodes: "DecodeSet") -> float:
        """Seconds of round ``step`` (the planner's per-request price of one iteration)."""
        self.last = self.micro_batches(step, chunks, decodes)
        return pipeline_seconds(self.timer, self.comm, self.layers, self.last, self.same_node)
