"""The ``reactive`` baseline: a Kubernetes-HPA / KEDA-style autoscaler per pool.

This is what most clouds run in front of LLM replicas today, and what Chiron and Llumnix
call a "utilisation-based autoscaler". Every ``interval_s`` it measures one metric over a
pool's ready instances and applies the HPA rule:

1. ``desired = ceil(ready × metric ÷ target)``; no change while ``|metric/target − 1| ≤
   tolerance``.
2. Stabilisation (as Kubernetes does it): every tick's raw ``desired`` is remembered; the
   scale-down recommendation is the *largest* desired over the last
   ``scale_down_stabilization_s`` and the scale-up recommendation the *smallest* over the last
   ``scale_up_stabilization_s``; the new size is the current size pushed up to the scale-up
   recommendation or down to the scale-down one. The history starts with the pool's size at
   the first tick, so a pool is not scaled down before one full window has been observed.
3. At most ``max_step`` instances added or removed per action, then clamped to
   ``[min_instances, max_instances]`` (and to the pool's own bounds); the bounds win over the
   step, as HPA's min/max replicas win over its rate policies.
4. No action within ``cooldown_s`` of the previous action on the same pool.

Instances still provisioning or loading count as current capacity (``active``) but are not
measured: when they are the only ones, the autoscaler holds rather than read a zero metric and
scale down the capacity it has just ordered. While some instances are ready, a scale-up only
happens when ``desired`` exceeds ``active``, so an order already on its way is not repeated.
This matches HPA, which counts not-yet-ready pods at zero usage when scaling up. An empty pool
(nothing active) scales to one instance when requests are queued for it, as KEDA activates
from zero; otherwise it stays at ``min_instances``.

Defaults are reconstructions of common Kubernetes defaults, not values from any LLM paper:
HPA's controller sync period is 15 s (``--horizontal-pod-autoscaler-sync-period``), its
tolerance 0.1, its scale-down stabilisation window 300 s and scale-up window 0 s
(``behavior.scaleDown/scaleUp.stabilizationWindowSeconds``). Modern HPA has no separate
cool-down; ``cooldown_s`` = 60 s reconstructs the legacy HPA up/down-scale delays and KEDA /
cloud auto-scaling-group cool-downs, set shorter than the down window so that it mainly damps
repeated scale-ups. ``min_instances`` = 1 is HPA's ``minReplicas`` default; ``max_instances``
= 64 is a cap of our own choosing (HPA requires the user to set ``maxReplicas``). ``max_step``
= None (unbounded) simplifies HPA's default rate policies (up: max(+4, ×2) per 15 s; down: all
per 15 s). ``target`` has no default: it depends on the metric and the deployment.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from collections.abc import Collection
from typing import Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from chironsim.config_base import (
    ConfigModel,
    InstanceCount,
    PolicyInterval,
    PositiveInstanceCount,
    Seconds,
)
from chironsim.errors import UnknownNameError
from chironsim.contract.actions import ScaleTo
from chironsim.policies.bundle import PolicyBundle
from chironsim.contract.states import READY
from chironsim.contract.views import ClusterView, PoolView
from chironsim.policies.routers import RouterConfig, build_router

ReactiveMetric = Literal["utilization", "queue_length", "kv_utilization"]

# Metrics that are fractions of a capacity, so a target above 1 could never be exceeded.
_FRACTION_METRICS = ("utilization", "kv_utilization")

# Guards ceil() against float noise: ceil(2 × 1.5000000001) must stay 3, not become 4.
_CEIL_SLACK = 1e-9

# Bounded number types (chironsim.limits says why each bound is what it is).


class ReactivePolicyConfig(ConfigModel):
    """``policy: {kind: reactive, metric: utilization, target: 0.7, ...}``."""

    kind: Literal["reactive"] = "reactive"
    router: RouterConfig = RouterConfig()
    pools: tuple[str, ...] | None = Field(
        None, description="Pools to scale; None scales every pool in the cluster."
    )
    metric: ReactiveMetric = "utilization"
    target: float = Field(gt=0, allow_inf_nan=False)
    tolerance: float = Field(0.1, ge=0, lt=1, allow_inf_nan=False)
    interval_s: PolicyInterval = 15.0
    scale_up_stabilization_s: Seconds = 0.0
    scale_down_stabilization_s: Seconds = 300.0
    cooldown_s: Seconds = 60.0
    min_instances: InstanceCount = 1
    max_instances: PositiveInstanceCount = 64
    max_step: PositiveInstanceCount | None = None

    @field_validator("pools")
    @classmethod
    def _pools_named_once(cls, pools: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if pools is None:
            return None
        if not pools:
            raise ValueError("pools must name at least one pool, or be omitted to scale all pools")
        if any(not name for name in pools):
            raise ValueError("pools must not contain an empty name")
        if len(set(pools)) != len(pools):
            raise ValueError(f"pools names a pool twice: {list(pools)}")
        return pools

    @model_validator(mode="after")
    def _consistent(self) -> ReactivePolicyConfig:
        if self.min_instances > self.max_instances:
            raise ValueError(
                f"min_instances ({self.min_instances}) must not exceed "
                f"max_instances ({self.max_instances})"
            )
        if self.metric in _FRACTION_METRICS and self.target > 1:
            raise ValueError(
                f"target ({self.target}) must be at most 1 for metric {self.metric!r}, "
                "which is a fraction of capacity"
            )
        return self

    def references(self) -> list[tuple[tuple[str | int, ...], str, str]]:
        """Pool names this config uses, as (key path under ``policy``, "pool", name), so the
        scenario is checked before it runs."""
        return [(("pools", i), "pool", name) for i, name in enumerate(self.pools or ())]

    def tick_intervals(self) -> dict[str, float]:
        """Controller periods by config key: the scenario bounds the ticks a run makes."""
        return {"interval_s": self.interval_s}

    def growable_pools(self, pools: Collection[str]) -> set[str]:
        """Pools this policy can add instances to: the ones it scales, even from zero (an
        empty pool with queued requests is woken, as KEDA does)."""
        return set(pools if self.pools is None else self.pools)


def measure(pool: PoolView, metric: ReactiveMetric) -> float | None:
    """The pool's metric over its ready instances, or None when none is ready.

    utilization: Σ running ÷ Σ max_num_seqs (batch seats in use);
    queue_length: (Σ waiting + pool queue) ÷ ready instances;
    kv_utilization: mean KV utilisation of the ready instances.
    """
    ready = 0
    running = seats = waiting = 0
    kv_sum = 0.0
    for inst in pool.instances:
        if inst.state != READY:
            continue
        ready += 1
        running += inst.running
        seats += inst.max_num_seqs
        waiting += inst.waiting
        kv_sum += inst.kv_utilization
    if ready == 0:
        return None
    if metric == "utilization":
        return running / seats if seats else 0.0
    if metric == "queue_length":
        return (waiting + pool.queued) / ready
    return kv_sum / ready


@dataclass
class _PoolHistory:
    """What the autoscaler remembers about one pool: recent recommendations and its last act."""

    recommendations: deque[tuple[float, int]] = field(default_factory=deque)
    last_action_time: float | None = None


class ReactiveAutoscaler:
    """HPA-style autoscaler over one or more pools; see the module docstring for the rule.

    Holds per-pool history, so one object serves one simulation. It draws no random numbers:
    the same sequence of views gives the same actions.
    """

    def __init__(self, cfg: ReactivePolicyConfig) -> None:
        self.cfg = cfg
        self.interval = cfg.interval_s
        self._window = max(cfg.scale_up_stabilization_s, cfg.scale_down_stabilization_s)
        self._pools: dict[str, _PoolHistory] = {}

    def on_tick(self, view: ClusterView) -> list[ScaleTo]:
        names = self.cfg.pools if self.cfg.pools is not None else tuple(view.pools)
        actions: list[ScaleTo] = []
        for name in names:
            pool = view.pools.get(name)
            if pool is None:
                raise UnknownNameError("pool", name, list(view.pools))
            action = self._decide(view.time, pool)
            if action is not None:
                actions.append(action)
        return actions

    def _decide(self, now: float, pool: PoolView) -> ScaleTo | None:
        cfg = self.cfg
        active = pool.active
        history = self._pools.get(pool.name)
        if history is None:
            # Kubernetes seeds a new autoscaler's history with the current size, so nothing
            # scales down before one full window of observations exists.
            history = self._pools[pool.name] = _PoolHistory()
            history.recommendations.append((now, active))
        value = measure(pool, cfg.metric)

        if value is None:
            # Nothing ready to measure: hold what is on its way, or wake an empty pool.
            desired = active if active > 0 else (1 if pool.queued > 0 else 0)
            observed = f"no ready instance (active={active}, queued={pool.queued})"
        else:
            ready = pool.count(READY)
            ratio = value / cfg.target
            if abs(ratio - 1.0) <= cfg.tolerance:
                desired = active
            else:
                desired = math.ceil(ready * ratio - _CEIL_SLACK)
                if ratio > 1.0:
                    desired = max(desired, active)  # capacity already ordered counts
            observed = f"{cfg.metric}={value:.4g} target={cfg.target:.4g} ready={ready}"

        stabilized = self._stabilize(history, now, desired, active)
        new_size = stabilized
        if cfg.max_step is not None:
            new_size = min(max(new_size, active - cfg.max_step), active + cfg.max_step)
        new_size = min(max(new_size, cfg.min_instances), cfg.max_instances)
        new_size = min(max(new_size, pool.min_instances), pool.max_instances)

        if new_size == active:
            return None
        if history.last_action_time is not None and now - history.last_action_time < cfg.cooldown_s:
            return None
        history.last_action_time = now
        reason = (
            f"reactive: {observed}; desired={desired} stabilized={stabilized} "
            f"active={active} -> {new_size}"
        )
        return ScaleTo(pool.name, new_size, reason=reason)

    def _stabilize(self, history: _PoolHistory, now: float, desired: int, active: int) -> int:
        """Kubernetes' stabilisation: raise to the smallest recommendation of the up window,
        lower to the largest of the down window, starting from the current size."""
        recs = history.recommendations
        recs.append((now, desired))
        while recs and recs[0][0] <= now - self._window:
            recs.popleft()
        up_cutoff = now - self.cfg.scale_up_stabilization_s
        down_cutoff = now - self.cfg.scale_down_stabilization_s
        up_rec = down_rec = desired
        for time, rec in recs:
            if time > up_cutoff and rec < up_rec:
                up_rec = rec
            if time > down_cutoff and rec > down_rec:
                down_rec = rec
        return min(max(active, up_rec), down_rec)


def build_reactive(cfg: ReactivePolicyConfig, rng: np.random.Generator) -> PolicyBundle:
    return PolicyBundle(
        router=build_router(cfg.router, rng),
        autoscalers=[ReactiveAutoscaler(cfg)],
        name=cfg.kind,
    )
