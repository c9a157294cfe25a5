"""The running decodes of one instance, kept as aggregates so an iteration costs O(1).

Every iteration gives each decoding request one token. Instead of touching each request, the
set stores per-request offsets against the instance's iteration counter ``step``:

* generated tokens at step ``s``: ``gen_at_join + s - join_step``;
* tokens needing KV slots in iteration ``s``: ``n(s) = ctx_key + s`` (prompt + generated, the
  newest token's KV is written by that iteration), so the sum of contexts is
  ``key_sum + size * s``;
* a request needs one more block in iteration ``s`` exactly when ``n(s) ≡ 1 (mod block)``, so
  a histogram of ``ctx_key mod block`` gives the blocks the whole set needs per iteration;
* completions sit in a heap keyed by the step after which the request is done.

Requests leaving early (preemption, eviction) are removed lazily from the heap.
"""

from __future__ import annotations

import heapq
from itertools import accumulate
from bisect import bisect_left
from collections.abc import Callable

import numpy as np

from chironsim.sim.request import Request


class DecodeSet:
    """Decoding requests of one instance with O(1) aggregates and a completion heap."""

    def __init__(self, block_size: int) -> None:
        self.block_size = block_size
        self.members: dict[int, Request] = {}
        self.key_sum = 0
        #: Members per ``ctx_key mod block_size`` (a list: read and updated one entry at a time).
        self.phase_counts: list[int] = [0] * block_size
        #: Members per request class (only classes present): who an iteration's gap goes to.
        self.by_class: dict[str, int] = {}
        self._class_counts: tuple[tuple[str, int], ...] | None = ()  # by_class as a tuple
        self._finish_heap: list[tuple[int, int, Request]] = []

    def __len__(self) -> int:
        return len(self.members)

    def add(self, req: Request, step: int) -> None:
        """Start decoding ``req`` from iteration ``step`` on, with its current ``generated``."""
        req.join_step = step
        req.gen_at_join = req.generated
        req.ctx_key = req.prompt_tokens + req.generated - step
        req.finish_step = step + req.output_tokens - req.generated
        self.members[req.request_id] = req
        self.key_sum += req.ctx_key
        self.phase_counts[req.ctx_key % self.block_size] += 1
        by_class = self.by_class
        by_class[req.request_class] = by_class.get(req.request_class, 0) + 1
        self._class_counts = None
        heapq.heappush(self._finish_heap, (req.finish_step, req.request_id, req))

    def remove(self, req: Request, step: int) -> None:
        """Stop decoding ``req`` before iteration ``step``; settles its ``generated``."""
        del self.members[req.request_id]
        self.key_sum -= req.ctx_key
        self.phase_counts[req.ctx_key % self.block_size] -= 1
        by_class = self.by_class
        left = by_class[req.request_class] - 1
        if left:
            by_class[req.request_class] = left
        else:
            del by_class[req.request_class]
        self._class_counts = None
        req.generated = req.gen_at_join + step - req.join_step

    def class_counts(self) -> tuple[tuple[str, int], ...]:
        """``tuple(by_class.items())``, rebuilt only after membership changed (every plan
        asks; most plans follow one that had the same members)."""
        counts = self._class_counts
        if counts is None:
            counts = self._class_counts = tuple(self.by_class.items())
        return counts

    def context_sum(self, step: int) -> int:
        return self.key_sum + len(self.members) * step

    def blocks_held(self, req: Request, step: int) -> int:
        """Blocks ``req`` holds when iteration ``step`` is about to start (before its growth)."""
        tokens = req.ctx_key + step - 1
        return -(-tokens // self.block_size)

    def growth_at(self, step: int) -> int:
        """New blocks the set needs at the start of iteration ``step``."""
        return self.phase_counts[(1 - step) % self.block_size]

    def growth_schedule(self, step: int, iterations: int) -> np.ndarray:
        """Blocks needed at the start of each of the next ``iterations`` iterations."""
        idx = (1 - (step + np.arange(iterations))) % self.block_size
        return np.array(self.phase_counts, dtype=np.int64)[idx]

    def growth_period(self, step: int) -> list[int]:
        """Blocks the set needs over the first ``r`` iterations from ``step``, for ``r`` in
        ``0 … block_size``: the growth is periodic (each member needs one block every
        ``block_size`` iterations, so a period needs ``len(self)``), so these ``block_size + 1``
        sums give the cumulative growth of any stretch (:meth:`Stretch.grown`)."""
        counts = self.phase_counts
        size = self.block_size
        # iteration step + j needs counts[(1 - step - j) % size]: counts reversed, rotated
        first = (1 - step) % size
        order = counts[first::-1] + counts[:first:-1]
        return [0, *accumulate(order)]

    def next_finish_step(self) -> int | None:
        """Smallest step counter value after which some member is done, or None."""
        heap = self._finish_heap
        while heap:
            finish_step, request_id, req = heap[0]
            if request_id in self.members and req.finish_step == finish_step:
                return finish_step
            heapq.heappop(heap)  # stale: the request left, or rejoined with a new key
        return None

    def pop_finished(self, step: int) -> list[Request]:
        """Remove and return members that are done once ``step`` iterations have run."""
        done: list[Request] = []
        while True:
            nxt = self.next_finish_step()
            if nxt is None or nxt > step:
                return done
            _, _, req = heapq.heappop(self._finish_heap)
            self.remove(req, step)
            done.append(req)

    def lowest_priority(self, order: Callable[[Request], tuple] = Request.sort_key) -> Request | None:
        """The member vLLM would preempt first: the largest ``order`` (by default lowest
        priority, then latest arrival)."""
        if not self.members:
            return None
        return max(self.members.values(), key=order)


class RunningMax:
    """Maximum iteration duration over any window ``[since, now]`` of iteration steps.

    A monotonic stack: an entry is dropped as soon as a later, longer iteration exists, because
    every window that still matters ends at the present and so contains that later one.
    """

    def __init__(self) -> None:
        self._steps: list[int] = []
        self._values: list[float] = []

    def push(self, step: int, value: float) -> None:
        steps, values = self._steps, self._values
        while values and values[-1] <= value:
            values.pop()
            steps.pop()
        steps.append(step)
        values.append(value)

    def max_since(self, step: int) -> float:
        """Largest value pushed at a step ≥ ``step`` (nan when none)."""
        i = bisect_left(self._steps, step)
        return self._values[i] if i < len(self._values) else float("nan")

    def __len__(self) -> int:
        return len(self._steps)
