"""Chiron's preference routing: own pool first, overflow to the preemptible mixed pool.

Only classes that the cluster does not hold in its global queue reach the router (in practice
the interactive class); the cluster passes the ready instances of every pool that serves the
class. One pass over the candidates, no temporary lists: the router runs once per arrival.
"""

from __future__ import annotations

from collections.abc import Sequence

from chironsim.policies.chiron.config import ChironPolicyConfig
from chironsim.contract.views import InstanceView, RequestView


def _less_loaded(best: InstanceView | None, inst: InstanceView) -> InstanceView:
    """Fewer outstanding requests, then lower KV utilisation; ties keep the earlier one."""
    if best is None:
        return inst
    if inst.outstanding != best.outstanding:
        return inst if inst.outstanding < best.outstanding else best
    return inst if inst.kv_utilization < best.kv_utilization else best


class ChironRouter:
    """Interactive requests: the least-outstanding interactive instance that has capacity (a
    free seat, ``running + waiting < max_num_seqs``, and KV utilisation below
    ``overflow_kv_threshold``); if none has, a mixed instance that can take it (a free seat,
    or batch work to evict); failing both, the
    least-loaded interactive or mixed instance, where it queues.

    Among mixed instances the one with the least *interactive* load (interactive running +
    waiting) wins, then fewest outstanding: the batch work on a mixed instance is evicted by
    an interactive arrival, so it does not delay the request the way interactive work does.
    Overflowing onto a mixed instance that has neither a seat nor batch work would leave the
    request queued behind interactive work there, with no one to re-route it; so such a
    mixed instance is only a last resort like any other full instance.

    Any other class goes to the least-outstanding candidate of its own pool
    (:meth:`ChironPolicyConfig.own_pool`), else the least-outstanding candidate overall.
    """

    __slots__ = ("_cfg",)

    def __init__(self, cfg: ChironPolicyConfig) -> None:
        self._cfg = cfg

    def route(self, request: RequestView, candidates: Sequence[InstanceView]) -> str:
        if request.request_class == self._cfg.interactive_class:
            return self._interactive(candidates).instance_id
        own = self._cfg.own_pool(request.request_class)
        in_own: InstanceView | None = None
        anywhere: InstanceView | None = None
        for inst in candidates:
            anywhere = _less_loaded(anywhere, inst)
            if inst.pool == own:
                in_own = _less_loaded(in_own, inst)
        chosen = in_own if in_own is not None else anywhere
        assert chosen is not None, "the cluster never routes with no candidates"
        return chosen.instance_id

    def _interactive(self, candidates: Sequence[InstanceView]) -> InstanceView:
        cfg = self._cfg
        with_room: InstanceView | None = None
        mixed: InstanceView | None = None
        mixed_load = 0
        fallback: InstanceView | None = None
        other: InstanceView | None = None
        for inst in candidates:
            if inst.pool == cfg.interactive_pool:
                fallback = _less_loaded(fallback, inst)
                if (inst.outstanding < inst.max_num_seqs
                        and inst.kv_utilization < cfg.overflow_kv_threshold):
                    with_room = _less_loaded(with_room, inst)
            elif inst.pool == cfg.mixed_pool:
                if not cfg.mixed:
                    continue
                fallback = _less_loaded(fallback, inst)
                if not self._mixed_can_take(inst):
                    continue
                load = inst.running_of(cfg.interactive_class) + inst.waiting
                if mixed is None or load < mixed_load or (
                        load == mixed_load and _less_loaded(mixed, inst) is inst):
                    mixed, mixed_load = inst, load
            else:
                other = _less_loaded(other, inst)
        for choice in (with_room, mixed, fallback, other):
            if choice is not None:
                return choice
        # Only ablated-mixed candidates were offered: serve rather than drop the request.
        return _first_least_loaded(candidates)

    def _mixed_can_take(self, inst: InstanceView) -> bool:
        """A mixed instance can start an interactive request soon: it has a free seat, or it
        runs batch work that the request will evict (interactive work is admitted ahead of any
        batch work waiting there, so only a mixed instance full of interactive work is out)."""
        return (inst.outstanding < inst.max_num_seqs
                or inst.running_of(self._cfg.batch_class) > 0)


def _first_least_loaded(candidates: Sequence[InstanceView]) -> InstanceView:
    best: InstanceView | None = None
    for inst in candidates:
        best = _less_loaded(best, inst)
    assert best is not None, "the cluster never routes with no candidates"
    return best
