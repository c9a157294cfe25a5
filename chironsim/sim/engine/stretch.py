"""The stretch planner: the duration of the next iteration, or of a run of identical ones.

While an instance only decodes and nothing can be admitted, consecutive iterations differ
only by their growing context, so a *stretch* of them is priced at once (their durations in
one vectorised call, their block needs from :class:`DecodeSet`'s histogram). The stretch
ends before the next completion and before decode growth would need a block that is not
free now. Times are accumulated exactly as stepping one iteration at a time would, so
``fast_forward`` changes speed, not results.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from chironsim.sim.allocator import KVBlockAllocator
from chironsim.sim.decode_set import DecodeSet
from chironsim.sim.request import Request

#: Longest stretch planned at once; a cap on array sizes, not on correctness.
MAX_STRETCH = 2048
#: Pooled owner key for decode growth not yet attributed to a request.
GROWTH = "__decode_growth__"


@dataclass(slots=True)
class Stretch:
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
    #: Decoding requests per class when planned: each gets one token, so one inter-token gap
    #: equal to the iteration's duration, per iteration (the ITL histograms, in bulk).
    decode_classes: tuple[tuple[str, int], ...] = ()


def add_in_order(total: float, values: np.ndarray) -> float:
    """``total + v0 + v1 + …`` left to right, as stepping one iteration at a time would add.

    ``np.sum`` adds pairwise, which differs in the last bits; ``cumsum`` is sequential.
    """
    n = len(values)
    if n == 1:  # one IEEE double addition, the same as cumsum's: the common single iteration
        return total + float(values[0])
    if n == 0:
        return total
    return float(np.concatenate(([total], values)).cumsum()[-1])  # methods: no dispatch wrapper


class StretchPlanner:
    """Prices the batch the scheduler chose; extends pure-decode batches into a stretch."""

    def __init__(self, decodes: DecodeSet, kv: KVBlockAllocator, iteration_time: Callable,
                 fast_forward: bool) -> None:
        self.decodes = decodes
        self.kv = kv
        self.iteration_time = iteration_time
        self.fast_forward = fast_forward
        #: Set by a scheduler for the batch it just chose when its next boundary may choose
        #: differently although nothing finishes and nothing wakes the instance (prefill_first:
        #: a waiting request it could admit now): that batch is one iteration, not a stretch.
        self.one_iteration = False
        #: When set, prices a single iteration from its requests rather than its totals:
        #: ``batch_time(step, chunks, decodes)`` (a fused group's micro-batch queues).
        self.batch_time: Callable | None = None

    def plan(self, step: int, clock: float, chunks: list[tuple[Request, int]],
             resumed: list[Request], transfer_seconds: float, growth: int) -> Stretch | None:
        """The iterations from ``step`` (starting at ``clock``); None when there is no work.

        ``growth`` blocks for iteration ``step`` are already claimed; blocks for the later
        iterations of a stretch are claimed here (into :data:`GROWTH`), from the blocks free
        now only, and given back by the instance for iterations that do not run.
        """
        decodes_set = self.decodes
        decodes = len(decodes_set)
        if not chunks and decodes == 0 and transfer_seconds == 0:
            return None
        if chunks or transfer_seconds or not self.fast_forward or self.one_iteration:
            self.one_iteration = False
            k = 1
        else:
            next_finish = decodes_set.next_finish_step()
            k = min(MAX_STRETCH, next_finish - step) if next_finish is not None else MAX_STRETCH
        if k == 1:  # growth_schedule(step, 1)'s one figure, without four numpy calls
            growth_cum = np.array([decodes_set.growth_at(step)])
        else:
            growth_cum = decodes_set.growth_schedule(step, k).cumsum()
            # Later iterations of the stretch may only use blocks that are free now.
            # (growth_cum - growth <= free is growth_cum <= free + growth: integers, exact)
            k = max(1, int(growth_cum.searchsorted(self.kv.free_blocks + growth, "right")))
            growth_cum = growth_cum[:k]
            extra = int(growth_cum[-1]) - growth
            if extra:
                self.kv.append(GROWTH, extra)
        ctx = decodes_set.context_sum(step)
        if k == 1:
            prefill_tokens = sum(n for _, n in chunks)
            attention = sum(n * (r.prefilled + n / 2) for r, n in chunks)
            if self.batch_time is not None:
                duration = float(self.batch_time(step, chunks, decodes_set))
            else:
                duration = float(self.iteration_time(prefill_tokens, attention, decodes, ctx))
            duration += transfer_seconds
            durations = np.array([duration])
            ends = np.array([clock + duration])  # what the cumsum below gives for one
        else:
            contexts = ctx + decodes * np.arange(k)
            durations = np.asarray(self.iteration_time(0, 0.0, decodes, contexts), dtype=float)
            ends = np.concatenate(([clock], durations)).cumsum()[1:]
        return Stretch(step, clock, ends, durations, growth_cum, k, decodes, chunks, resumed,
                       not chunks and transfer_seconds == 0, decodes_set.class_counts())
