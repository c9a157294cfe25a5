"""Shared weight-loading bandwidth: instances that load at the same time split it evenly.

A fluid processor-sharing model: with ``n`` loads in progress each advances at ``bandwidth/n``
bytes per second. Cold starts of a scale-out burst therefore take longer than one alone, as
they do when many replicas pull from one model store. A cancelled load (an instance stopped
while loading) gives its share back at once.
"""

from __future__ import annotations

import simpy


class WeightStore:
    """Processor-sharing bandwidth for weight downloads; one per cluster."""

    def __init__(self, env: simpy.Environment, bandwidth_bytes_per_s: float) -> None:
        self.env = env
        self.bandwidth = bandwidth_bytes_per_s
        self._remaining: dict[simpy.Event, float] = {}
        self._last = env.now
        self._generation = 0

    def load(self, num_bytes: float) -> simpy.Event:
        """Start loading ``num_bytes``; the returned event fires when the load completes."""
        done = self.env.event()
        self._advance()
        if num_bytes <= 0:
            done.succeed()
            return done
        self._remaining[done] = float(num_bytes)
        self._reschedule()
        return done

    def cancel(self, done: simpy.Event) -> None:
        """Stop a load in progress (its instance was stopped while loading): the others share
        the bandwidth it leaves from now on. The load's event fires with value ``False``
        so that whoever waits on it is released; a finished or unknown load is ignored."""
        if done not in self._remaining:
            return
        self._advance()
        del self._remaining[done]
        done.succeed(False)
        self._reschedule()

    @property
    def active_loads(self) -> int:
        return len(self._remaining)

    def _advance(self) -> None:
        """Credit the bytes moved since the last change to every active load."""
        now = self.env.now
        if self._remaining and now > self._last:
            moved = (now - self._last) * self.bandwidth / len(self._remaining)
            for ev in self._remaining:
                self._remaining[ev] -= moved
        self._last = now

    def _reschedule(self) -> None:
        self._generation += 1
        if not self._remaining:
            return
        share = self.bandwidth / len(self._remaining)
        delay = max(0.0, min(self._remaining.values()) / share)
        generation = self._generation
        self.env.timeout(delay).callbacks.append(lambda _: self._on_timer(generation))

    def _on_timer(self, generation: int) -> None:
        if generation != self._generation:
            return  # superseded by a later change
        self._advance()
        # Relative tolerance: float credit may leave a few bytes on the finishing load.
        for ev, left in list(self._remaining.items()):
            if left <= 1e-6 * self.bandwidth:
                del self._remaining[ev]
                ev.succeed()
        self._reschedule()
