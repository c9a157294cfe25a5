"""The ``llumnix`` policy: the decision functions wired to the simulator's actions.

Three pieces share one :class:`LastPoll`:

- :class:`Poller`, an autoscaler ticking every ``poll_interval`` that observes load reports
  only (``observes = "load"``): it stores them, ranks the instances for dispatch once, and
  pairs migrations (:func:`.pairing.pair_migrations`) into
  :class:`~chironsim.contract.actions.Migrate` actions. A terminating (draining) instance is
  always a source: its running requests leave by live migration and its waiting ones are
  handed over, so it reaches zero and stops.
- :class:`PollRouter`, the router: every arrival goes to the first instance of the last
  poll's ranking that is still a candidate. Nothing updates the ranking between polls, so a
  burst inside one interval lands on one instance (``reference/llumnix_kunserve.md`` A.2.3).
- :class:`Scaler`, every ``scaling_interval``: :func:`.scaling.scaling_decision` per pool, a
  ``ScaleTo`` one instance up or a ``Drain`` of the chosen instance, which the poller then
  empties by migration (with ``migration: false``, as INFaaS++, it finishes its work in place).
  A pool with no ready instance grows by one when requests wait for it (the view's
  ``queued``), so a pool may start at zero.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from chironsim.contract.actions import Action, Drain, Migrate, ScaleTo
from chironsim.contract.load import LoadReport
from chironsim.contract.views import ClusterView, InstanceView, RequestView
from chironsim.policies.bundle import PolicyBundle
from chironsim.policies.llumnix.config import LlumnixPolicyConfig
from chironsim.policies.llumnix.dispatch import ranking
from chironsim.policies.llumnix.freeness import NO_HEADROOM
from chironsim.policies.llumnix.pairing import MigrateRunning, pair_migrations
from chironsim.policies.llumnix.scaling import ScaleUp, ScalingState, scaling_decision
from chironsim.policies.routers import RoundRobinRouter


class LastPoll:
    """What the manager knows between polls: the instance ids in dispatch order."""

    __slots__ = ("order",)

    def __init__(self) -> None:
        self.order: tuple[str, ...] = ()


def _reports(view: ClusterView) -> dict[str, Sequence[LoadReport]]:
    return {name: pool.load for name, pool in view.pools.items()}


class Poller:
    """Polls every instance each ``poll_interval`` and pairs migrations."""

    observes = "load"

    def __init__(self, cfg: LlumnixPolicyConfig, last: LastPoll) -> None:
        self.cfg = cfg
        self.interval = cfg.poll_interval
        self.last = last

    def on_tick(self, view: ClusterView) -> list[Action]:
        cfg = self.cfg
        pools = _reports(view)
        everything = [r for reports in pools.values() for r in reports]
        # INFaaS++ balances on memory load and queued demand alone: no priority headroom.
        self.last.order = ranking(everything,
                                  cfg.headroom() if cfg.dispatch == "llumnix" else NO_HEADROOM)
        if not cfg.migration:
            return []
        actions: list[Action] = []
        for reports in pools.values():  # a request moves only to an instance of its own pool
            for d in pair_migrations(reports, threshold=cfg.migrate_out_threshold,
                                     headroom=cfg.headroom(), max_out=cfg.max_migrations_out,
                                     max_in=cfg.max_migrations_in, busy=cfg.busy_pairs,
                                     exclusive=cfg.exclusive_migration):
                if isinstance(d, MigrateRunning):
                    actions.append(Migrate(d.source, d.destination, pick=cfg.request_choice,
                                           low_priority_first=cfg.low_priority_first,
                                           reason=d.reason))
                else:
                    actions.append(Migrate(d.source, d.destination, pick="first_waiting",
                                           reason=d.reason))
        return actions


class PollRouter:
    """Routes to the freest instance of the last poll that is still a candidate."""

    def __init__(self, last: LastPoll) -> None:
        self.last = last

    def route(self, request: RequestView, candidates: Sequence[InstanceView]) -> str | None:
        ids = {c.instance_id for c in candidates}
        for instance_id in self.last.order:
            if instance_id in ids:
                return instance_id
        # Not polled yet (or every ranked instance is gone): all instances look alike.
        return candidates[0].instance_id


class Scaler:
    """Freeness scaling every ``scaling_interval``: one instance up, or one drained."""

    observes = "load"

    def __init__(self, cfg: LlumnixPolicyConfig) -> None:
        self.cfg = cfg
        self.interval = cfg.scaling_interval
        self.state: dict[str, ScalingState] = {}

    def on_tick(self, view: ClusterView) -> list[Action]:
        cfg = self.cfg
        actions: list[Action] = []
        for name, pool in view.pools.items():
            reports = pool.load
            decision, self.state[name] = scaling_decision(
                reports, self.state.get(name, ScalingState()),
                up_threshold=cfg.scale_up_threshold, down_threshold=cfg.scale_down_threshold,
                sustain=cfg.scaling_sustain, headroom=cfg.scaling_headroom(),
                min_instances=pool.min_instances, max_instances=pool.max_instances,
                queued=pool.queued)
            if decision is None:
                continue
            if isinstance(decision, ScaleUp):
                active = pool.active
                reason = (f"no ready instance, {decision.queued} requests waiting"
                          if decision.queued else f"pooled freeness {decision.freeness:.3g} < "
                          f"{cfg.scale_up_threshold:g}")
                actions.append(ScaleTo(name, max(pool.min_instances, min(active + 1, pool.max_instances)),
                                       reason=reason))
            else:
                actions.append(Drain(decision.instance_id,
                                     reason=f"pooled freeness without it {decision.freeness:.3g}"
                                     f" > {cfg.scale_down_threshold:g}"))
        return actions


def build_llumnix(cfg: LlumnixPolicyConfig, rng: np.random.Generator) -> PolicyBundle:
    last = LastPoll()
    autoscalers: list = []
    if "poll_interval" in cfg.tick_intervals():
        autoscalers.append(Poller(cfg, last))
    if cfg.scaling:
        autoscalers.append(Scaler(cfg))
    router = RoundRobinRouter() if cfg.dispatch == "round_robin" else PollRouter(last)
    engine = {key: value for key, (value, _) in cfg.engine_needs().items()}
    return PolicyBundle(router=router, autoscalers=autoscalers, name=cfg.kind,
                        engine_settings=engine)

