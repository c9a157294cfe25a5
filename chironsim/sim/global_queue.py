"""A cluster-level queue of one request class, served earliest-deadline-first.

Chiron keeps batch requests in a global queue (grouped by model and SLO, groups ordered by
deadline) and lets instances pull from it when they have room. Requests without a deadline
sort after all that have one, in arrival order. The queue keeps running sums of the output
tokens its requests still have to generate, so the waiting-time estimate a policy needs
(mean and spread of the remaining work) is O(1) to read.
"""

from __future__ import annotations

import heapq
import math

from chironsim.contract.views import QueueView
from chironsim.sim.request import Request


class GlobalQueue:
    """EDF heap of requests with O(1) statistics of their remaining output tokens."""

    def __init__(self, request_class: str) -> None:
        self.request_class = request_class
        self._heap: list[tuple[float, float, int, Request]] = []
        self._sum = 0.0
        self._sum_sq = 0.0
        self._by_arrival: list[tuple[float, int]] = []  # (arrival, id), pruned lazily
        self._present: set[int] = set()

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, req: Request) -> None:
        deadline = req.deadline if not math.isnan(req.deadline) else math.inf
        heapq.heappush(self._heap, (deadline, req.arrival, req.request_id, req))
        heapq.heappush(self._by_arrival, (req.arrival, req.request_id))
        self._present.add(req.request_id)
        remaining = req.output_tokens - req.generated
        self._sum += remaining
        self._sum_sq += remaining * remaining

    def head(self) -> Request:
        return self._heap[0][3]

    def pop(self) -> Request:
        req = heapq.heappop(self._heap)[3]
        self._present.discard(req.request_id)
        remaining = req.output_tokens - req.generated
        self._sum -= remaining
        self._sum_sq -= remaining * remaining
        if not self._heap:  # reset float drift when empty
            self._sum = self._sum_sq = 0.0
        return req

    def drain(self) -> list[Request]:
        """Remove and return everything (end of run)."""
        items = [entry[3] for entry in self._heap]
        self._heap.clear()
        self._by_arrival.clear()
        self._present.clear()
        self._sum = self._sum_sq = 0.0
        return items

    def view(self) -> QueueView:
        n = len(self._heap)
        if n == 0:
            return QueueView(self.request_class, 0)
        mean = self._sum / n
        var = max(0.0, self._sum_sq / n - mean * mean)
        return QueueView(
            request_class=self.request_class,
            length=n,
            remaining_tokens_mean=mean,
            remaining_tokens_std=math.sqrt(var),
            earliest_deadline=self._heap[0][0],
            oldest_arrival=self._oldest_arrival(),
        )

    def _oldest_arrival(self) -> float:
        by_arrival = self._by_arrival
        while by_arrival[0][1] not in self._present:
            heapq.heappop(by_arrival)
        return by_arrival[0][0]
