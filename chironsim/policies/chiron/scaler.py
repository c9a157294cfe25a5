"""Chiron's global autoscaler: instance counts of the interactive, mixed and batch pools.

Every ``global_interval`` seconds it makes three decisions.

**Interactive pool, on interactive backpressure.** An instance is *pressed* when it runs
interactive requests and either their number reaches ``near_limit_fraction × max_num_seqs``
(it is at or near its batch limit, which the local autoscaler lowers when ITL suffers) or it
has requests waiting (interactive work is queueing behind a full batch or a full KV cache),
or, with ``itl_backpressure``, its mean ITL since the previous global tick exceeds the
interactive ITL target (the SLO itself is under pressure, which more seats cannot fix and the
local autoscaler answers by cutting seats, so without it the signal arrives only once requests
queue).
Backpressure = pressed ready instances ÷ (ready + starting instances) over the interactive and
mixed pools. Counting starting instances in the denominator treats capacity already ordered
as relief on its way, so sustained pressure adds roughly the instances it lacks instead of one
per tick for the whole cold start. Above ``ibp_high``: one more interactive instance. Below
``ibp_low`` continuously for ``scale_down_delay``: one fewer, and the delay restarts, so each
further removal needs another full quiet period (hysteresis). Never below ``min_interactive``.

**Mixed pool**: ``max(1, ceil(mixed_fraction × interactive target))`` instances, 0 when the
mixed pool is ablated: the over-provisioned headroom that absorbs bursts and runs batch work
when idle.

**Batch pool, on the waiting-time bound of the global batch queue.** With ``q`` queued
requests whose remaining output tokens have mean μ and standard deviation σ, and Θ the token
throughput of the ready batch and mixed instances, the time to drain the queue is bounded
(central limit theorem, one-sided) by ``W = q·μ/Θ + z·√q·σ/Θ``; its relative spread shrinks as
1/√q, which is the "tighter bound as the queue grows" of the paper. With ``slack`` the time
left to the earliest deadline and ``h = slack − cold_start_s`` the time new instances would
have, ``W > h`` adds batch instances: enough for the bound to hold,

    needed = ceil((work / h − Θ_mixed) / θ),   work = q·μ + z·√q·σ,

where Θ_mixed is what the mixed instances contribute and θ the mean measured throughput of a
ready batch instance (``batch_instance_throughput_tokens_s`` before any measurement). With
z = 0 and no mixed instances this is the spec's ``ceil(q·μ / (θ·h))``. When ``h ≤ 0`` new
instances cannot save the earliest deadline but every one helps the rest: the pool goes to its
maximum. Both are capped at ``q`` (an instance with no request to pull is waste) and at the
pool's bounds. The pool never shrinks while requests are queued; with the queue empty and no
request left on a ready batch instance, it goes to zero (its ``min_instances``). A non-empty
queue with no batch-capable instance at all, ready or starting, gets one batch instance even
without a deadline, so that requests with no deadline are not stranded.

Throughput per instance is measured between this autoscaler's own ticks from the cumulative
``tokens_generated``. A mixed instance contributes the share of its throughput that its
running batch requests represent (all of it when it runs nothing). An instance counts at the
fallback constant until it has a measured window, and when it generated nothing in the window.
The first full window after an instance is first seen ready is its warm-up (it fills a whole
batch from the queue, prefilling every prompt, while the local autoscaler probes its limit)
and is not taken as a measurement: it would understate the instance's throughput and order
instances that are not needed.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

from chironsim.errors import UnknownNameError
from chironsim.contract.actions import ScaleTo
from chironsim.policies.chiron.config import ChironPolicyConfig
from chironsim.contract.states import LOADING, PROVISIONING, READY
from chironsim.contract.views import ClusterView, InstanceView, PoolView, QueueView

# Guards ceil() against float noise: a need of exactly 3.0000000001 instances stays 3.
_CEIL_SLACK = 1e-9


def _ready(pools: tuple[PoolView | None, ...]) -> Iterator[InstanceView]:
    """The ready instances of the given pools (absent pools are skipped)."""
    for pool in pools:
        if pool is not None:
            yield from (inst for inst in pool.instances if inst.state == READY)


class ChironGlobalAutoscaler:
    """Scales the three Chiron pools; see the module docstring for the rules."""

    def __init__(self, cfg: ChironPolicyConfig) -> None:
        self.cfg = cfg
        self.interval = cfg.global_interval
        self._low_since: float | None = None
        # instance id -> (time, tokens_generated, ticks seen ready before this sample)
        self._samples: dict[str, tuple[float, int, int]] = {}
        # instance id -> (decode_iterations, decode_seconds) at the previous tick
        self._decode: dict[str, tuple[int, float]] = {}
        # instance ids whose ITL over the last interval exceeded the interactive target
        self._itl_over: set[str] = set()

    def on_tick(self, view: ClusterView) -> list[ScaleTo]:
        cfg = self.cfg
        interactive = self._pool(view, cfg.interactive_pool)
        batch = self._pool(view, cfg.batch_pool)
        mixed = view.pools.get(cfg.mixed_pool)
        if mixed is None and cfg.mixed:
            raise UnknownNameError("pool", cfg.mixed_pool, list(view.pools))
        rates = self._measure(view.time, (batch, mixed))
        if cfg.itl_backpressure:
            self._itl_over = self._measure_itl((interactive, mixed))

        actions: list[ScaleTo] = []
        target, action = self._interactive(view.time, interactive, mixed)
        if action is not None:
            actions.append(action)
        if mixed is not None:
            action = self._mixed(mixed, target)
            if action is not None:
                actions.append(action)
        action = self._batch(view.time, batch, mixed, view.queues.get(cfg.batch_class), rates)
        if action is not None:
            actions.append(action)
        return actions

    @staticmethod
    def _pool(view: ClusterView, name: str) -> PoolView:
        pool = view.pools.get(name)
        if pool is None:
            raise UnknownNameError("pool", name, list(view.pools))
        return pool

    # --- interactive ----------------------------------------------------------------------
    def pressed(self, inst: InstanceView) -> bool:
        """Running interactive work at or near its batch limit, or with work waiting."""
        running = inst.running_of(self.cfg.interactive_class)
        if running == 0:
            return False
        return (running >= self.cfg.near_limit_fraction * inst.max_num_seqs
                or inst.waiting > 0 or inst.instance_id in self._itl_over)

    def _measure_itl(self, pools: tuple[PoolView | None, ...]) -> set[str]:
        """Ready instances whose mean ITL since the previous tick exceeds the interactive ITL
        target (a first sight or a window without decode iterations says nothing)."""
        target = self.cfg.itl_slo[self.cfg.interactive_class]
        over: set[str] = set()
        counters: dict[str, tuple[int, float]] = {}
        for inst in _ready(pools):
            now_counters = (inst.decode_iterations, inst.decode_seconds)
            previous = self._decode.get(inst.instance_id)
            counters[inst.instance_id] = now_counters
            if previous is None or now_counters[0] <= previous[0]:
                continue
            itl = (now_counters[1] - previous[1]) / (now_counters[0] - previous[0])
            if itl > target:
                over.add(inst.instance_id)
        self._decode = counters
        return over

    def backpressure(self, interactive: PoolView, mixed: PoolView | None) -> float | None:
        """Pressed ready instances ÷ (ready + starting) of the interactive and mixed pools;
        None when none of them is ready (nothing to measure)."""
        pools = (interactive,) if mixed is None else (interactive, mixed)
        ready = pressed = starting = 0
        for pool in pools:
            for inst in pool.instances:
                if inst.state == READY:
                    ready += 1
                    pressed += self.pressed(inst)
                elif inst.state in (PROVISIONING, LOADING):
                    starting += 1
        return pressed / (ready + starting) if ready else None

    def _interactive(self, now: float, pool: PoolView,
                     mixed: PoolView | None) -> tuple[int, ScaleTo | None]:
        cfg = self.cfg
        active = pool.active
        low = max(cfg.min_interactive, pool.min_instances)
        high = min(cfg.max_interactive_instances, pool.max_instances)
        bp = self.backpressure(pool, mixed)
        desired = active
        if bp is None:
            self._low_since = None
            observed = "no ready interactive or mixed instance"
        else:
            observed = f"backpressure={bp:.3g}"
            if bp > cfg.ibp_high:
                self._low_since = None
                desired = active + 1
                observed += f" > ibp_high={cfg.ibp_high:g}"
            elif bp < cfg.ibp_low:
                if self._low_since is None:
                    self._low_since = now
                quiet = now - self._low_since
                observed += f" < ibp_low={cfg.ibp_low:g} for {quiet:.4g}s"
                if quiet >= cfg.scale_down_delay and active > low:
                    desired = active - 1
                    self._low_since = now
            else:
                self._low_since = None
        target = min(max(desired, low), high)
        if target == active:
            return target, None
        reason = (f"chiron global interactive: {observed}; active={active} desired={desired} "
                  f"bounds=[{low}, {high}] -> {target}")
        return target, ScaleTo(pool.name, target, reason=reason)

    # --- mixed ----------------------------------------------------------------------------
    def _mixed(self, pool: PoolView, interactive_target: int) -> ScaleTo | None:
        cfg = self.cfg
        if cfg.mixed:
            want = max(1, math.ceil(cfg.mixed_fraction * interactive_target - _CEIL_SLACK))
            rule = f"max(1, ceil({cfg.mixed_fraction:g} x {interactive_target}))={want}"
        else:
            want, rule = 0, "mixed pool ablated"
        target = min(max(want, pool.min_instances), cfg.max_mixed_instances, pool.max_instances)
        if target == pool.active:
            return None
        return ScaleTo(pool.name, target, reason=f"chiron global mixed: {rule}; "
                       f"active={pool.active} -> {target}")

    # --- batch ----------------------------------------------------------------------------
    def _measure(self, now: float,
                 pools: tuple[PoolView | None, ...]) -> dict[str, float | None]:
        """Tokens/s of every ready instance of ``pools`` since this autoscaler's last tick
        (None: no measured window yet, warm-up, or nothing generated); samples roll forward."""
        rates: dict[str, float | None] = {}
        samples: dict[str, tuple[float, int, int]] = {}
        for inst in _ready(pools):
            previous = self._samples.get(inst.instance_id)
            rate = None
            age = 0 if previous is None else previous[2] + 1
            if previous is not None and previous[2] >= 1 and now > previous[0]:
                tokens = inst.tokens_generated - previous[1]
                if tokens > 0:
                    rate = tokens / (now - previous[0])
            rates[inst.instance_id] = rate
            samples[inst.instance_id] = (now, inst.tokens_generated, age)
        self._samples = samples
        return rates

    def _batch_share(self, inst: InstanceView) -> float:
        if inst.running == 0:
            return 1.0
        return inst.running_of(self.cfg.batch_class) / inst.running

    def _batch(self, now: float, pool: PoolView, mixed: PoolView | None,
               queue: QueueView | None, rates: dict[str, float | None]) -> ScaleTo | None:
        cfg = self.cfg
        fallback = cfg.batch_instance_throughput_tokens_s
        active = pool.active
        low = pool.min_instances
        high = min(cfg.max_batch_instances, pool.max_instances)
        q = queue.length if queue is not None else 0

        if q == 0:
            busy = sum(inst.outstanding for inst in pool.instances if inst.state == READY)
            if busy:
                return None
            target = low
            reason = f"chiron global batch: queue empty, batch instances idle -> {target}"
        else:
            measured = [rates[i.instance_id] for i in pool.instances
                        if i.state == READY and rates.get(i.instance_id) is not None]
            theta_batch = sum(r if (r := rates.get(i.instance_id)) is not None else fallback
                              for i in pool.instances if i.state == READY)
            theta_mixed = 0.0
            mixed_active = 0
            if mixed is not None:
                mixed_active = mixed.active
                for inst in mixed.instances:
                    if inst.state == READY:
                        rate = rates.get(inst.instance_id)
                        theta_mixed += (fallback if rate is None else rate) * self._batch_share(inst)
            theta = theta_batch + theta_mixed
            per_instance = sum(measured) / len(measured) if measured else fallback
            mu, sigma = queue.remaining_tokens_mean, queue.remaining_tokens_std
            work = q * mu + cfg.z * math.sqrt(q) * sigma
            wait = work / theta if theta > 0 else math.inf
            slack = queue.earliest_deadline - now
            horizon = slack - cfg.cold_start_s
            cap = min(high, q)
            target = active
            if wait > horizon:
                if horizon <= 0:
                    needed = cap
                else:
                    needed = math.ceil((work / horizon - theta_mixed) / per_instance
                                       - _CEIL_SLACK)
                target = max(active, min(needed, cap))
            else:
                needed = None
            if active + mixed_active == 0:
                target = max(target, 1)
            reason = (f"chiron global batch: q={q} mu={mu:.4g} sigma={sigma:.4g} "
                      f"Theta={theta:.4g} tok/s (mixed {theta_mixed:.4g}) W={wait:.4g}s "
                      f"slack={slack:.4g}s cold_start={cfg.cold_start_s:.4g}s "
                      f"theta_per_instance={per_instance:.4g} needed={needed} "
                      f"active={active} -> {target}")
        target = min(max(target, low), high)
        if target == active:
            return None
        return ScaleTo(pool.name, target, reason=reason)
