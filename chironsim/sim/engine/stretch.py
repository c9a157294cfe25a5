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
from bisect import bisect_right
from dataclasses import dataclass

import numpy as np

from chironsim.perf.roofline import IterationTimeModel
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
    #: Cumulative new decode blocks over the first r iterations of one period (r = 0 … P,
    #: the last entry a whole period's); :meth:`grown` extends it to any count.
    growth_part: list[int]
    k: int
    decodes: int
    prefill_chunks: list[tuple[Request, int]]
    resumed: list[Request]
    pure_decode: bool         # no prefill chunk and no KV transfer in these iterations
    #: Decoding requests per class when planned: each gets one token, so one inter-token gap
    #: equal to the iteration's duration, per iteration (the ITL histograms, in bulk).
    decode_classes: tuple[tuple[str, int], ...] = ()

    def grown(self, n: int) -> int:
        """New decode blocks the first ``n`` iterations claimed (``n`` ≤ those planned)."""
        part = self.growth_part
        period = len(part) - 1
        q, r = divmod(n, period)
        return q * part[period] + part[r]


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
        self.iteration_time = iteration_time  # also sets _decode_stretch (the property below)
        self.fast_forward = fast_forward
        #: Set by a scheduler for the batch it just chose when its next boundary may choose
        #: differently although nothing finishes and nothing wakes the instance (prefill_first:
        #: a waiting request it could admit now): that batch is one iteration, not a stretch.
        self.one_iteration = False
        #: When set, prices a single iteration from its requests rather than its totals:
        #: ``batch_time(step, chunks, decodes)`` (a fused group's micro-batch queues).
        self.batch_time: Callable | None = None

    @property
    def iteration_time(self) -> Callable:
        return self._iteration_time

    @iteration_time.setter
    def iteration_time(self, iteration_time: Callable) -> None:
        """A roofline's own ``iteration_time`` also gives its ``decode_stretch_time`` for
        stretches (the same durations, bit for bit, faster); any other pricing function
        prices a stretch's contexts as an array."""
        self._iteration_time = iteration_time
        owner = getattr(iteration_time, "__self__", None)
        self._decode_stretch = (owner.decode_stretch_time
                                if isinstance(owner, IterationTimeModel)
                                and iteration_time.__func__ is IterationTimeModel.iteration_time
                                else None)

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
        if k == 1:  # one iteration: its growth, as a period of one
            part = [0, decodes_set.growth_at(step)]
        else:
            # Later iterations of the stretch may only use blocks that are free now: the
            # longest run of n iterations whose cumulative growth is at most free + growth
            # (the growth of one period, per_period, is the number of decodes, at least 1).
            part = decodes_set.growth_period(step)
            period = len(part) - 1
            per_period = part[period]
            limit = self.kv.free_blocks + growth
            q = limit // per_period
            longest = q * period + bisect_right(part, limit - q * per_period) - 1
            if longest < k:
                k = longest if longest > 1 else 1
            q, r = divmod(k, period)
            extra = q * per_period + part[r] - growth
            if extra:
                self.kv.append(GROWTH, extra)
        ctx = decodes_set.context_sum(step)
        if k == 1:
            prefill_tokens = sum(n for _, n in chunks)
            attention = sum(n * (r.prefilled + n / 2) for r, n in chunks)
            if self.batch_time is not None:
                duration = float(self.batch_time(step, chunks, decodes_set))
            else:
                duration = float(self._iteration_time(prefill_tokens, attention, decodes, ctx))
            duration += transfer_seconds
            durations = np.array([duration])
            ends = np.array([clock + duration])  # what the cumsum below gives for one
        else:
            if self._decode_stretch is not None:
                durations = self._decode_stretch(decodes, ctx, k)
            else:
                contexts = np.arange(ctx, ctx + decodes * k, decodes)  # ctx + decodes * i, exact ints
                durations = np.asarray(self._iteration_time(0, 0.0, decodes, contexts), dtype=float)
            ends = np.concatenate(([clock], durations)).cumsum()[1:]
        return Stretch(step, clock, ends, durations, part, k, decodes, chunks, resumed,
                       not chunks and transfer_seconds == 0, decodes_set.class_counts())
