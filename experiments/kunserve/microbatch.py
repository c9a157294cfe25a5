"""Would explicit micro-batch queues change a fused group's rounds? (REPORT: what the mechanism
approximates.)

The simulator cuts each round's batch into g balanced micro-batches: prefill tokens evenly,
decodes ⌈d/g⌉/⌊d/g⌋ *with their context in proportion* (``sim.mechanisms.fusion``). KunServe
keeps g explicit queues: a request joins the queue with the fewest unfinished requests and
decodes are rebalanced by moving (max − min)/2 requests, which balances their *count*, not
their context; long prompts are chunked so micro-batches balance. So the one difference in a
round's price is the decodes' context: per queue it is whatever the requests there hold.

:class:`QueueLog` wraps the fused leader's price. At every round it also prices the same batch
with the decodes dealt to g queues in request order (counts within one, as the paper's
dispatch and rebalancing keep them; contexts as they fall) and the prefill still cut evenly
(the paper's chunking at its best), and records both. The ratio of the two is what explicit
queues would add to the round, bubbles included. With ``explicit=True`` the run is priced
that way, so longer rounds feed back into the load; the granularity effects (admission at
micro-batch rather than round boundaries) stay aside, and the REPORT bounds them separately.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from chironsim.perf.pipeline import cycle_time, hop_time, micro_batch_time, stage_layers, stage_times
from chironsim.sim.mechanisms.fusion import comm_of, same_node, split_evenly


def round_seconds(timer, comm, g: int, node: bool, batches: list[tuple]) -> float:
    """One round of ``batches`` (prefill tokens, prefill attention work, decodes, context) on g
    stages, as ``fusion.pipelined_iteration_time`` prices its balanced micro-batches."""
    layers = stage_layers(timer.model.num_layers, g)
    batches = [b for b in batches if b[0] or b[2]]
    if not batches:
        return 0.0
    if len(batches) == 1:
        return float(micro_batch_time(timer, comm, layers, *batches[0], same_node=node))
    stages = [stage_times(timer, layers, *b) for b in batches]
    hops = [hop_time(comm, b[0] + b[2], timer.model.hidden_size, node) for b in batches]
    return float(cycle_time(stages, hops))


def queue_batches(args: tuple, contexts: list[int], g: int) -> list[tuple]:
    """The round's batch as g explicit queues: prefill cut evenly, decodes dealt in request
    order (``contexts`` sorted by request id), each queue with its own requests' context."""
    prefill_tokens, attention_work, _, _ = args
    pts = split_evenly(int(prefill_tokens), g)
    out = []
    for i, pt in enumerate(pts):
        mine = contexts[i::g]
        paw = attention_work * pt / prefill_tokens if pt else 0.0
        out.append((pt, paw, len(mine), sum(mine)))
    return out


def balanced_batches(args: tuple, g: int) -> list[tuple]:
    """The simulator's cut: prefill evenly, decodes ⌈d/g⌉/⌊d/g⌋ with context in proportion."""
    prefill_tokens, attention_work, decode_seqs, decode_context = args
    out = []
    for pt, ds in zip(split_evenly(int(prefill_tokens), g), split_evenly(int(decode_seqs), g)):
        paw = attention_work * pt / prefill_tokens if pt else 0.0
        dc = decode_context * ds / decode_seqs if ds else 0
        out.append((pt, paw, ds, dc))
    return out


@dataclass
class QueueLog:
    """Wraps ``FusionCoordinator._pipelined_time``: per round (simulated seconds, the same
    recomputed from the balanced cut, the explicit-queue seconds, decodes)."""

    pools: Any  # cluster.pools: the leader's timer and GPU
    #: price the rounds with the explicit queues (the run then *is* explicit-queue KunServe,
    #: as far as round prices go) instead of only recording them
    explicit: bool = False
    rounds: list[tuple[float, float, float, int]] = field(default_factory=list)
    skipped: int = 0  # rounds whose decode arguments did not match the leader's decode set

    def wrap(self, factory):
        def make(leader, g):
            price = factory(leader, g)
            spec = self.pools[leader.pool]
            timer, comm = spec.timer, comm_of(spec.timer)
            node = same_node(spec.gpu.gpus_per_node, spec.tp, g)

            def logged(*args):
                seconds = float(price(*args))
                decodes = sorted(leader.decodes.members.values(), key=lambda r: r.request_id)
                contexts = [leader.context_of(r) for r in decodes]
                if len(contexts) != int(args[2]) or sum(contexts) != int(args[3]):
                    self.skipped += 1
                    return seconds
                queues = round_seconds(timer, comm, g, node, queue_batches(args, contexts, g))
                self.rounds.append((seconds, round_seconds(timer, comm, g, node, balanced_batches(args, g)),
                                    queues, len(contexts)))
                return queues if self.explicit else seconds
            return logged
        return make

    def summary(self) -> dict[str, float]:
        import numpy as np

        if not self.rounds:
            return {"rounds": 0, "skipped": self.skipped}
        sim, balanced, explicit, decodes = (np.array(c, dtype=float) for c in zip(*self.rounds))
        ratio = explicit / np.where(balanced > 0, balanced, 1.0)
        many = decodes >= 2
        return {"rounds": len(sim), "skipped": self.skipped,
                "recompute_rel_error_max": float(np.max(np.abs(balanced - sim) / np.maximum(sim, 1e-12))),
                "decodes_median": float(np.median(decodes)),
                "time_ratio": float(explicit.sum() / balanced.sum()),
                "round_ratio_p50": float(np.median(ratio[many])) if many.any() else 1.0,
                "round_ratio_p95": float(np.quantile(ratio[many], 0.95)) if many.any() else 1.0,
                "round_ratio_max": float(ratio.max())}
