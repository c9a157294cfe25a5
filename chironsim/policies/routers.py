"""Request routers: the per-arrival placement decision among a pool's accepting instances.

A router is called once per arrival, so each one makes a single pass over the candidates
(no sorting, no temporary lists) and keeps at most a counter or a random generator as state.
Ties always fall to the earlier candidate: the cluster passes candidates in a stable order,
so placement is deterministic for a given seed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from chironsim.config_base import StrictModel
from chironsim.contract.protocols import Router
from chironsim.contract.views import InstanceView, RequestView


class RoundRobinRouter:
    """Cycles through the candidates by position: the classic load-oblivious baseline.

    The counter indexes the candidate list modulo its current length, so instances joining or
    leaving the pool shift the cycle but never stall it.
    """

    __slots__ = ("_next",)

    def __init__(self) -> None:
        self._next = 0

    def route(self, request: RequestView, candidates: Sequence[InstanceView]) -> str:
        chosen = candidates[self._next % len(candidates)]
        self._next += 1
        return chosen.instance_id


class LeastOutstandingRouter:
    """Fewest running + waiting requests; ties go to the lower KV utilisation, then the earlier
    candidate. The "load-balanced" dispatch that Llumnix compares against.

    The KV utilisation is the costly figure on a live instance (inside a stretch it depends on
    the time), so it is read only to break a tie on outstanding requests. Counts and blocks
    are never negative, so an empty instance with an empty cache (0 outstanding, utilisation
    0.0) cannot be beaten by a later candidate: the scan stops there, which makes a lightly
    loaded large cluster cost a few candidates per arrival, not all of them.
    """

    __slots__ = ()

    def route(self, request: RequestView, candidates: Sequence[InstanceView]) -> str:
        best = candidates[0]
        best_outstanding = best.outstanding
        best_kv: float | None = None  # read on the first tie
        if best_outstanding == 0:
            best_kv = best.kv_utilization
            if best_kv == 0.0:
                return best.instance_id
        for inst in candidates:  # no slice, no copy: the first is skipped below
            outstanding = inst.outstanding
            if outstanding > best_outstanding or inst is best:
                continue
            if outstanding < best_outstanding:
                best, best_outstanding, best_kv = inst, outstanding, None
                if outstanding == 0:
                    best_kv = inst.kv_utilization
                    if best_kv == 0.0:
                        break
                continue
            if best_kv is None:
                best_kv = best.kv_utilization
            kv = inst.kv_utilization
            if kv < best_kv:
                best, best_kv = inst, kv
                if outstanding == 0 and kv == 0.0:
                    break
        return best.instance_id


class KVAwareRouter:
    """Most free KV blocks; ties go to fewer outstanding requests, then the earlier candidate.

    The blocks that an instance's waiting requests will claim are not in the view, so this
    ranks by the free blocks the instance reports now (Llumnix's freeness refines this).
    """

    __slots__ = ()

    def route(self, request: RequestView, candidates: Sequence[InstanceView]) -> str:
        best = candidates[0]
        best_free = best.kv_free_blocks
        best_outstanding = best.outstanding
        for inst in candidates:  # the first compares equal to itself: no slice, no copy
            free = inst.kv_free_blocks
            if free < best_free:
                continue
            outstanding = inst.outstanding
            if free > best_free or outstanding < best_outstanding:
                best, best_free, best_outstanding = inst, free, outstanding
        return best.instance_id


class RandomRouter:
    """Uniformly random placement, drawn from the policy's own generator (reproducible)."""

    __slots__ = ("_rng",)

    def __init__(self, rng: np.random.Generator) -> None:
        self._rng = rng

    def route(self, request: RequestView, candidates: Sequence[InstanceView]) -> str:
        return candidates[int(self._rng.integers(len(candidates)))].instance_id


RouterKind = Literal["round_robin", "least_outstanding", "kv_aware", "random"]


class RouterConfig(StrictModel):
    """Which router a policy uses. ``least_outstanding`` is the default because it is what a
    plain load balancer in front of vLLM replicas does."""

    kind: RouterKind = "least_outstanding"


def build_router(cfg: RouterConfig, rng: np.random.Generator) -> Router:
    """A fresh router for one simulation; ``rng`` is used only by the random router."""
    if cfg.kind == "round_robin":
        return RoundRobinRouter()
    if cfg.kind == "least_outstanding":
        return LeastOutstandingRouter()
    if cfg.kind == "kv_aware":
        return KVAwareRouter()
    if cfg.kind == "random":
        return RandomRouter(rng)
    raise AssertionError(f"RouterConfig admitted unknown kind {cfg.kind!r}")  # pragma: no cover
