"""Chiron's local autoscaler: each instance's batch-size limit follows its ITL backpressure.

Every ``local_interval`` seconds, for each ready instance:

1. From the cumulative counters in two consecutive views, the window's mean inter-token
   latency is Δdecode_seconds ÷ Δdecode_iterations and its throughput Δtokens_generated ÷ Δt.
   A window without decode iterations carries no ITL information: nothing changes. With
   ``itl_signal: pure_decode`` the ITL comes from the iterations without a prefill chunk
   (``pure_decode_*`` counters) instead: halving the batch shortens those, whereas the stall
   a new prompt's prefill chunk adds is set by ``max_num_batched_tokens`` and no batch-size
   cut removes it. Averaging it in (``all``, the default) halves instances exactly when a
   burst of new prompts arrives.
2. The ITL is smoothed by an EWMA (weight ``alpha`` on the newest window).
3. The target is the ITL SLO of the strictest class the instance is running now (an idle
   instance has no target and holds).
4. EWMA > target: halve ``max_num_seqs`` (not below ``b_min``). Otherwise, if the limit binds
   (the instance runs ``max_num_seqs`` requests or has work waiting — a larger limit would
   admit more), double it (not above ``b_max``: ``b_max_batch`` on batch-pool instances,
   ``b_max_other`` elsewhere) as a *probe* when there is no throughput reference, or when the
   window's throughput exceeds the reference by more than ``epsilon``; else hold (the
   throughput knee: a larger batch bought nothing).

The reference is the throughput of the window that ended at the last increase. A halving
clears it, and the limit may be probed upward again ``probe_holdoff_s`` after the halving:
comparing against the violating window's throughput instead (an earlier version did) leaves
the limit stuck at its floor under steady load, because a smaller batch cannot beat the
throughput of the larger one it replaced. Probing only while the limit binds keeps an idle
instance from drifting to ``b_max`` and then admitting a whole burst at once. These choices
are reconstructions: the paper does not publish its update rule.

An instance first seen ready is set to ``b_start`` (or keeps its configured limit), clamped to
``[b_min, b_max]``. State is kept per instance id and dropped once the instance is not ready.
"""

from __future__ import annotations

from dataclasses import dataclass

from chironsim.contract.actions import SetMaxNumSeqs
from chironsim.policies.chiron.config import ChironPolicyConfig
from chironsim.contract.states import READY
from chironsim.contract.views import ClusterView, InstanceView


@dataclass
class _InstanceState:
    """Counters at the previous tick, the smoothed ITL and the throughput reference."""

    time: float
    tokens: int
    iterations: int
    seconds: float
    ewma_itl: float | None = None
    reference_tps: float | None = None
    halved_at: float | None = None


class ChironLocalAutoscaler:
    """Per-instance ``max_num_seqs`` control; see the module docstring for the rule."""

    def __init__(self, cfg: ChironPolicyConfig) -> None:
        self.cfg = cfg
        self.interval = cfg.local_interval
        self._state: dict[str, _InstanceState] = {}

    def target_itl(self, inst: InstanceView) -> float | None:
        """ITL SLO of the strictest listed class running on ``inst``; None when none is."""
        slo = self.cfg.itl_slo
        targets = [slo[name] for name, count in inst.running_by_class
                   if count > 0 and name in slo]
        return min(targets) if targets else None

    def on_tick(self, view: ClusterView) -> list[SetMaxNumSeqs]:
        actions: list[SetMaxNumSeqs] = []
        seen: set[str] = set()
        for pool in view.pools.values():
            for inst in pool.instances:
                if inst.state != READY:
                    continue
                seen.add(inst.instance_id)
                action = self._decide(view.time, inst)
                if action is not None:
                    actions.append(action)
        for gone in [iid for iid in self._state if iid not in seen]:
            del self._state[gone]
        return actions

    def _decide(self, now: float, inst: InstanceView) -> SetMaxNumSeqs | None:
        cfg = self.cfg
        b_max = cfg.b_max(inst.pool)
        current = inst.max_num_seqs
        state = self._state.get(inst.instance_id)
        if state is None:
            self._state[inst.instance_id] = _InstanceState(
                now, inst.tokens_generated, *self._itl_counters(inst))
            start = cfg.b_start if cfg.b_start is not None else current
            first = min(max(start, cfg.b_min), b_max)
            return self._set(inst, first, f"chiron local: first seen, limit in [{cfg.b_min}, "
                             f"{b_max}]")

        dt = now - state.time
        total_iterations, total_seconds = self._itl_counters(inst)
        iterations = total_iterations - state.iterations
        seconds = total_seconds - state.seconds
        tokens = inst.tokens_generated - state.tokens
        state.time, state.tokens = now, inst.tokens_generated
        state.iterations, state.seconds = total_iterations, total_seconds
        if dt <= 0 or iterations <= 0:
            return None
        itl = seconds / iterations
        state.ewma_itl = itl if state.ewma_itl is None else (
            cfg.alpha * itl + (1 - cfg.alpha) * state.ewma_itl)
        tps = tokens / dt
        target = self.target_itl(inst)
        if target is None:
            return None
        observed = f"ewma_itl={state.ewma_itl:.4g}s target={target:.4g}s tps={tps:.4g}"
        if state.ewma_itl > target:
            state.reference_tps = None
            state.halved_at = now
            return self._set(inst, max(cfg.b_min, current // 2),
                             f"chiron local: {observed} above target, halve")
        if inst.running < current and not inst.waiting:
            return None  # the limit does not bind: more seats would admit nothing
        reference = state.reference_tps
        if reference is None and state.halved_at is not None and (
                now - state.halved_at < cfg.probe_holdoff_s):
            return None
        if reference is None or tps > (1 + cfg.epsilon) * reference:
            state.reference_tps = tps
            gain = "probe" if reference is None else f"tps rose from {reference:.4g}"
            return self._set(inst, min(b_max, 2 * current),
                             f"chiron local: {observed}, {gain}, double")
        return None

    def _itl_counters(self, inst: InstanceView) -> tuple[int, float]:
        """Cumulative (iterations, seconds) of the iterations the ITL signal averages."""
        if self.cfg.itl_signal == "pure_decode":
            return inst.pure_decode_iterations, inst.pure_decode_seconds
        return inst.decode_iterations, inst.decode_seconds

    @staticmethod
    def _set(inst: InstanceView, limit: int, reason: str) -> SetMaxNumSeqs | None:
        if limit == inst.max_num_seqs:
            return None
        return SetMaxNumSeqs(inst.instance_id, limit,
                             reason=f"{reason}: {inst.max_num_seqs} -> {limit}")
