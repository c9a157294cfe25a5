"""Dispatch from the last poll's reports: Llumnix (freest instance), INFaaS++-like, round-robin.

Every function here reads only the reports it is given. The reports are refreshed once per
``poll_interval`` and not updated after a dispatch (the released code does not touch the stored
load between polls, ``reference/llumnix_kunserve.md`` A.2.3), so every arrival inside one
interval gets the same answer: a burst lands on one instance. That staleness is Llumnix's, and
reproducing it is a requirement (``reference/README.md``, Llumnix, Dispatch). Because the answer
is a pure function of the reports, a caller may compute it once per poll and reuse it.

Only ready instances are candidates (a terminating one would rank at −∞ anyway). Ties go to
the smallest instance id, so runs are deterministic; the released code sorts without a
randomised tie-break.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from chironsim.contract.load import LoadReport
from chironsim.policies.llumnix.freeness import NO_HEADROOM, dispatch_freeness


def ranking(reports: Sequence[LoadReport],
            headroom: Mapping[int, int] = NO_HEADROOM) -> tuple[str, ...]:
    """The ready instances, freest first (dispatch freeness, ties to the smaller id): what a
    poll leaves the router, which takes the first that is still a candidate."""
    ready = [(-dispatch_freeness(r, headroom), r.instance_id) for r in reports if r.accepting]
    ready.sort()
    return tuple(instance_id for _, instance_id in ready)


def freest(reports: Sequence[LoadReport],
           headroom: Mapping[int, int] = NO_HEADROOM) -> str | None:
    """Llumnix dispatch: the ready instance with the highest dispatch freeness
    ``(free − watermark − Σ waiting prompt blocks − H) / (R + Q)``; ``None`` if no instance is
    ready. With ``headroom`` the paper's priority headroom counts (Algorithm 1 has one freeness
    for every request, whatever its priority); empty, this is Llumnix-base."""
    best_id: str | None = None
    best = 0.0
    for r in reports:
        if not r.accepting:
            continue
        f = dispatch_freeness(r, headroom)
        if best_id is None or f > best or (f == best and r.instance_id < best_id):
            best_id, best = r.instance_id, f
    return best_id


def infaas_plus_plus(reports: Sequence[LoadReport]) -> str | None:
    """INFaaS++-like dispatch: the paper's authors' improved INFaaS balances on memory load and
    queued demand. Read per the specification (``reference/README.md``, Llumnix, Baselines) as
    Llumnix's dispatch freeness without priorities: free memory net of the watermark and of the
    queued prompts' demand, per request. It is therefore :func:`freest` with no headroom; what
    makes the INFaaS++ baseline differ from Llumnix is that it runs without migration (and
    scales on the same load), which the policy config expresses, not this function."""
    return freest(reports, NO_HEADROOM)


class RoundRobin:
    """Cycles through the ready instances in report order: the load-oblivious baseline (the
    paper's vLLM-style round-robin). The counter indexes the current candidates modulo their
    number, so instances joining or leaving shift the cycle but never stall it (as
    :class:`chironsim.policies.routers.RoundRobinRouter`)."""

    __slots__ = ("_next",)

    def __init__(self) -> None:
        self._next = 0

    def pick(self, reports: Sequence[LoadReport]) -> str | None:
        ready = [r.instance_id for r in reports if r.accepting]
        if not ready:
            return None
        chosen = ready[self._next % len(ready)]
        self._next += 1
        return chosen
