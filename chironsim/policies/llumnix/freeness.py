"""Llumnix's freeness: free KV blocks per request, from one poll's :class:`LoadReport`.

Freeness is "how many more decode steps the batch can run before memory runs out", in blocks
per request; higher is freer. The formulas are the released code's (``llumnix/instance_info.py``
at ``37d8e5ea``, unchanged at ``v0.1.0``; ``reference/llumnix_kunserve.md`` A.2.2), which store
``load = −freeness``:

- dispatch and scaling: ``F_d = (free − watermark − Σ waiting prompt blocks − H) / (R + Q)``
- migration:            ``F_m = (free − watermark − head-of-line blocks − H) / (R + [Q > 0])``
- no request counted in the denominator: ``+∞``; a terminating (draining) instance: ``−∞``.

``H`` is the priority headroom. The released code has none (A.2.2: grepped at ``37d8e5ea``,
``v0.1.0`` and HEAD), so it follows the paper's Algorithm 1 (A.2.1): a running request of
priority ``p`` has virtual usage ``physical + headroom[p] / numRequests[p]``, so summed over an
instance the headroom of ``p`` counts exactly once when at least one request of ``p`` runs
there, whatever their number. Queued requests get no headroom (Algorithm 1 returns their demand
or 0 before adding it). Passing an empty mapping is the priority-agnostic Llumnix-base.

Where paper and code differ, this is the code's form: the paper divides by the batch size B
(running only) and counts only the head-of-line demand; the code divides by ``R + Q`` (dispatch)
or ``R + [Q > 0]`` (migration), charges all waiting prompts to dispatch, and reserves the vLLM
watermark. For a terminating instance the paper adds a fake request of infinite usage (−∞); the
code reports ``R = 1``, ``avail = −M`` (``−M``). Both sort below every live instance; this
module returns ``−∞`` as the specification says.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from types import MappingProxyType

from chironsim.contract.load import LoadReport

INF = math.inf
#: the priority-agnostic headroom (Llumnix-base, INFaaS++): none
NO_HEADROOM: Mapping[int, int] = MappingProxyType({})


def headroom_blocks(report: LoadReport, headroom: Mapping[int, int]) -> int:
    """Σ ``headroom[p]`` over the priorities with at least one running request (Algorithm 1:
    the per-request shares ``headroom[p] / numRequests[p]`` sum to ``headroom[p]``)."""
    if not headroom:
        return 0
    return sum(headroom.get(p, 0) for p in report.running_priorities)


def dispatch_freeness(report: LoadReport, headroom: Mapping[int, int] = NO_HEADROOM) -> float:
    """``(free − watermark − Σ waiting prompt blocks − H) / (R + Q)``; used by dispatch and
    (pooled) by scaling. +∞ when the instance holds no request, −∞ when terminating."""
    if report.terminating:
        return -INF
    requests = report.running + report.waiting
    if requests == 0:
        return INF
    avail = report.free_blocks - report.watermark_blocks - report.waiting_prompt_blocks
    return (avail - headroom_blocks(report, headroom)) / requests


def migration_freeness(report: LoadReport, headroom: Mapping[int, int] = NO_HEADROOM) -> float:
    """``(free − watermark − head-of-line blocks − H) / (R + [Q > 0])``: the head of the queue
    counts as one more request with its whole demand (the paper's "virtual usage" of the
    queue head, which pushes work out of an instance whose queue is blocked). +∞ when the
    instance holds no request, −∞ when terminating."""
    if report.terminating:
        return -INF
    requests = report.running + (1 if report.waiting else 0)
    if requests == 0:
        return INF
    avail = report.free_blocks - report.watermark_blocks - report.head_of_line_blocks
    return (avail - headroom_blocks(report, headroom)) / requests


def pooled_dispatch_freeness(reports: Iterable[LoadReport],
                             headroom: Mapping[int, int] = NO_HEADROOM,
                             without: LoadReport | None = None) -> float:
    """Dispatch freeness of the pool taken as one instance (the code's ``avg_load`` scale
    policy, ``scale_scheduler.py`` at ``37d8e5ea``): sums of free, watermark, waiting prompt
    blocks, headroom, running and waiting, then one division. +∞ when the pool holds no
    request.

    ``without``: the freeness after removing that instance the way the code's scale-down check
    does: its capacity and watermark leave the pool, its requests stay (they will be migrated),
    so its used blocks are taken from the others' free blocks (never below zero) and its
    headroom is kept (its high-priority requests still need theirs somewhere). The caller
    passes only the instances that count (the scaler: ready, not terminating).
    """
    free = watermark = 0
    waiting_blocks = 0.0
    room = requests = 0
    for r in reports:
        requests += r.running + r.waiting
        waiting_blocks += r.waiting_prompt_blocks
        room += headroom_blocks(r, headroom)
        if r is without:
            free -= r.total_blocks - r.free_blocks
        else:
            free += r.free_blocks
            watermark += r.watermark_blocks
    if requests == 0:
        return INF
    return (max(0, free) - watermark - waiting_blocks - room) / requests
