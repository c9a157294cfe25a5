"""Scaling by drain (issue 9 item 6; ``reference/llumnix_kunserve.md`` A.3).

Every ``scaling_interval`` (10 s) the released code's ``avg_load`` policy
(``scale_scheduler.py`` at ``37d8e5ea``) pools the instances into one and computes its dispatch
freeness ``(Σfree − Σwatermark − Σ waiting prompt blocks) / (ΣR + ΣQ)``:

- below ``scale_up_threshold`` (10): add one instance (the code adds dummy instances with
  infinite blocks until the pooled freeness reaches the threshold: one, in effect);
- else, if the pooled freeness *without one instance* is above ``scale_down_threshold`` (60):
  terminate that instance. Without it means its blocks and watermark leave the pool and its
  requests stay (its used blocks come out of the others' free blocks): see
  :func:`~chironsim.policies.llumnix.freeness.pooled_dispatch_freeness`.

The instance is the one with the fewest running requests (the paper, Sec. 4.4.3; the code
removes "the last instance"); it is marked terminating and drained by migration
(:mod:`.pairing`). Which instances are pooled: the ready, non-terminating ones (a terminating
instance reports −∞ and its requests are leaving; the code has no such state in its pool).
The code does not scale while an instance has not reported yet; here likewise, no decision is
taken while an instance is provisioning or loading, so a cold start is never doubled up. One
drain at a time: no scale-down while an instance is still draining, so the next decision reads
a freeness that already includes the first drain's requests (ours).

With no ready instance there is no freeness to pool (an empty pool, or its last instance
draining), and requests that arrive wait at the cluster for the pool. Then: add one instance
when any wait (``queued``, the pool's cluster-level queue), nothing otherwise. This is the
formula's own limit: a pooled instance with no blocks and ``Q > 0`` queued requests has
``F = (0 − 0 − allq) / Q ≤ 0``, below any scale-up threshold, and the code's rule adds one
instance per check; with nothing queued it is ``+∞`` (no request), so an idle empty pool stays
empty. Without this rule a pool that starts at zero, or that the scaler drained to zero
(``min_instances: 0``), could never grow again.

The paper scales on the normal priority's freeness "for a period" and publishes no thresholds;
both are options: ``sustain`` consecutive checks with the condition held (1 = the code's
immediate rule), and the headroom passed in (none = normal-priority freeness, see
:mod:`.config`). The scaling loop is not wired in either released version (A.3), so the code's
behaviour here is its ``check_scale`` as written.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from chironsim.contract.load import LoadReport
from chironsim.contract.states import LOADING, PROVISIONING, READY
from chironsim.policies.llumnix.freeness import INF, NO_HEADROOM, pooled_dispatch_freeness


@dataclass(frozen=True, slots=True)
class ScalingState:
    """Consecutive checks for which each condition has held (the sustained variant)."""

    up_streak: int = 0
    down_streak: int = 0


@dataclass(frozen=True, slots=True)
class ScaleUp:
    """Add one instance; ``freeness`` is the pooled freeness that asked for it, or, when
    no instance was ready to measure it on, ``-inf`` with the ``queued`` requests waiting."""

    freeness: float
    queued: int = 0


@dataclass(frozen=True, slots=True)
class ScaleDown:
    """Terminate ``instance_id`` and drain it by migration; ``freeness`` is the pooled freeness
    without it."""

    instance_id: str
    freeness: float


def scaling_decision(reports: Sequence[LoadReport], state: ScalingState, *,
                     up_threshold: float, down_threshold: float, sustain: int = 1,
                     headroom: Mapping[int, int] = NO_HEADROOM,
                     min_instances: int = 0, max_instances: int | None = None,
                     queued: int = 0,
                     ) -> tuple[ScaleUp | ScaleDown | None, ScalingState]:
    """One scaling check over one pool's reports; returns the decision (or ``None``) and the
    state for the next check. ``queued``: requests waiting at the cluster for the pool (no
    instance could take them), what an empty pool scales on. Pure: reads only its
    arguments."""
    if sustain < 1:
        raise ValueError(f"sustain must be at least 1 check, got {sustain}")
    if any(r.state in (PROVISIONING, LOADING) for r in reports):
        return None, ScalingState()
    live = [r for r in reports if r.state == READY]
    if not live:
        if queued == 0 or (max_instances is not None and max_instances <= 0):
            return None, ScalingState()
        streak = state.up_streak + 1
        if streak >= sustain:
            return ScaleUp(-INF, queued), ScalingState()
        return None, ScalingState(up_streak=streak)
    pooled = pooled_dispatch_freeness(live, headroom)
    if pooled < up_threshold:
        streak = state.up_streak + 1
        if streak >= sustain and (max_instances is None or len(live) < max_instances):
            return ScaleUp(pooled), ScalingState()
        return None, ScalingState(up_streak=streak)
    victim = min(live, key=lambda r: (r.running, r.instance_id))
    without = pooled_dispatch_freeness(live, headroom, without=victim)
    if without <= down_threshold:
        return None, ScalingState()
    streak = state.down_streak + 1
    draining = any(r.terminating for r in reports)
    if streak >= sustain and not draining and len(live) > min_instances:
        return ScaleDown(victim.instance_id, without), ScalingState()
    return None, ScalingState(down_streak=streak)
