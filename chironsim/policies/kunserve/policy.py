"""The ``kunserve`` policy: the decision functions wired to the fused-group mechanism.

Three pieces share one :class:`Groups` record:

- :class:`Sampler`, every ``usage_sample_interval`` (0.5 s): one :class:`UsageSample` per
  independent instance and one per fused group (its leader's report: the leader's allocator is
  the group's pooled KV after the drop), pushed into a :class:`UsageWindow` each (15 s). A
  group that changes shape (drops, splits) starts a new window under its leader's id.
- :class:`Checker`, every ``drop_check_interval`` (0.1 s): fresh samples of the same kind from
  its own view, then :func:`.triggers.drop_decisions` over the independent static groups (per
  group, or every group once one triggers with ``trigger_scope: all_groups``) and
  :func:`.triggers.restore_decisions` over the fused ones, issued as
  :class:`~chironsim.contract.actions.DropParameters` (the group's first member leads; its
  stale-request mode and exchange batch size from this config) and
  :class:`~chironsim.contract.actions.RestoreParameters` (with ``restore_batch_size``).
- :class:`GroupRouter`: an arrival goes to the group with the fewest outstanding requests
  (:func:`.dispatch.pick_group`; a fused group is its leader, the only member that takes
  requests), and inside an unfused group to its member with the fewest outstanding.

The router's second step, a fused group's micro-batch queue with the fewest unfinished
requests, is the mechanism's: the leader keeps the g queues and assigns each request it runs
(:mod:`chironsim.sim.mechanisms.microbatch`), as it alone sees them.

Groups are static by default (the released code's ``--group-size``): consecutive instances of a
pool, in creation order, ``group_size`` each. With ``drop_plan: greedy`` (a reconstruction,
:mod:`.plan`) there are no static groups: every unfused instance is its own group for dispatch,
and each check forms groups around the voters from the pool's ``fusion_gain_blocks``. Both
tickers read load reports only (``observes = "load"``), which say each instance's state and
group.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from chironsim.contract.actions import Action, DropParameters, RestoreParameters
from chironsim.contract.load import LoadReport
from chironsim.contract.states import READY
from chironsim.contract.views import ClusterView, InstanceView, PoolView, RequestView
from chironsim.policies.bundle import PolicyBundle
from chironsim.policies.kunserve.config import KunServePolicyConfig
from chironsim.policies.kunserve.dispatch import pick_group
from chironsim.policies.kunserve.plan import greedy_drop_plan, static_groups
from chironsim.policies.kunserve.sample import UsageSample
from chironsim.policies.kunserve.triggers import drop_decisions, restore_decisions, votes_to_drop
from chironsim.policies.kunserve.window import UsageWindow

#: The policy's stale-request modes → the mechanism's (sim.config.FusionConfig)
STALE_MODE = {"live_exchange": "live", "blocking_exchange": "blocking", "recompute": "recompute"}


def usage_sample(report: LoadReport) -> UsageSample:
    """An instance's (or fused group's, from its leader) KV state as the trigger reads it:
    demanded = blocks in use + blocks its queued requests need (B.2's waiting + swapped +
    running)."""
    pending = int(round(report.waiting_prompt_blocks))
    used = report.total_blocks - report.free_blocks
    return UsageSample(report.instance_id, used + pending, max(1, report.total_blocks),
                       max(0, report.free_blocks), pending, report.waiting)


class Groups:
    """What the pieces share: each instance's static group key and the usage windows."""

    def __init__(self, cfg: KunServePolicyConfig) -> None:
        self.cfg = cfg
        self.key: dict[str, str] = {}  # instance id -> static group key (its first member)
        self.windows: dict[str, UsageWindow] = {}  # by instance id, or a fused group's leader
        self.fused_seen: set[str] = set()  # leaders whose window restarted at the drop

    def static(self, view: ClusterView) -> dict[str, list[tuple[LoadReport, ...]]]:
        """Per pool, the static groups of its instances' reports (creation order)."""
        out = {}
        for name, pool in view.pools.items():
            by_id = {r.instance_id: r for r in pool.load}
            groups = static_groups([r.instance_id for r in pool.load], self.cfg.group_size)
            for members in groups:
                for member in members:
                    self.key[member] = members[0]
            out[name] = [tuple(by_id[i] for i in members) for members in groups]
        return out

    def window(self, key: str) -> UsageWindow:
        window = self.windows.get(key)
        if window is None:
            window = self.windows[key] = UsageWindow(self.cfg.window_samples)
        return window

    def observe_shape(self, view: ClusterView) -> None:
        """Restart a leader's window when its group forms and when it splits."""
        leaders = {r.group for pool in view.pools.values() for r in pool.load if r.group}
        for leader in leaders - self.fused_seen:
            self.window(leader).clear()
        for leader in self.fused_seen - leaders:
            self.window(leader).clear()
        self.fused_seen = leaders


def _independent(members: Sequence[LoadReport]) -> bool:
    return all(r.state == READY and not r.group for r in members)


class Sampler:
    """Pushes every instance's (or fused group's) usage into its window."""

    observes = "load"

    def __init__(self, cfg: KunServePolicyConfig, groups: Groups) -> None:
        self.interval = cfg.usage_sample_interval
        self.groups = groups

    def on_tick(self, view: ClusterView) -> list[Action]:
        groups = self.groups
        groups.observe_shape(view)
        for pool in view.pools.values():
            for report in pool.load:
                if report.state == READY:  # a fused group's leader reports for the group
                    groups.window(report.instance_id).push(usage_sample(report).usage)
        return []


class Checker:
    """Drop and restore decisions every ``drop_check_interval``."""

    observes = "load"

    def __init__(self, cfg: KunServePolicyConfig, groups: Groups) -> None:
        self.cfg = cfg
        self.interval = cfg.drop_check_interval
        self.groups = groups

    def on_tick(self, view: ClusterView) -> list[Action]:
        groups = self.groups
        groups.observe_shape(view)
        static = groups.static(view) if self.cfg.drop_plan == "static" else None
        actions: list[Action] = []
        for name, pool in view.pools.items():
            actions += self._greedy_drops(pool) if static is None else self._static_drops(static[name])
            actions += self._restores(pool)
        return actions

    def _static_drops(self, static: list[tuple[LoadReport, ...]]) -> list[Action]:
        """The static groups (all members independent) whose members' votes drop them."""
        cfg = self.cfg
        independent = {k: [usage_sample(r) for r in members]
                       for k, members in enumerate(static) if _independent(members)}
        actions: list[Action] = []
        for decision in drop_decisions(independent, cfg):
            members = static[decision.group]
            votes = sum(votes_to_drop(s, cfg.drop_usage) for s in independent[decision.group])
            actions.append(DropParameters(
                tuple(r.instance_id for r in members),
                reason=f"{votes} of {len(members)} members at usage >= {cfg.drop_usage:g} "
                "with queued demand >= free blocks" + (
                    "" if votes else f" (trigger_scope {cfg.trigger_scope})"),
                stale_requests=STALE_MODE[cfg.stale_requests],
                exchange_batch_size=cfg.exchange_batch_size))
        return actions

    def _restores(self, pool: PoolView) -> list[Action]:
        """The pool's fused groups whose leader votes to restore."""
        cfg = self.cfg
        leaders = [r for r in pool.load if r.group == r.instance_id and r.state == READY]
        fused = {k: (usage_sample(r), self.groups.window(r.instance_id)) for k, r in enumerate(leaders)}
        return [RestoreParameters(
                    leaders[decision.group].instance_id,
                    reason=f"no queue, usage {fused[decision.group][0].usage:.3g} "
                    f"<= {cfg.restore_usage:g} and falling", batch_size=cfg.restore_batch_size)
                for decision in restore_decisions(fused, cfg)]

    def _greedy_drops(self, pool: PoolView) -> list[Action]:
        """The greedy drop plan over the pool's independent instances: every voter (usage ≥
        ``drop_usage`` and queued demand ≥ free blocks) needs ``max(1, demand − free)`` blocks,
        every other independent instance may partner, and groups up to ``group_size`` are
        weighed by the pool's ``fusion_gain_blocks``."""
        cfg = self.cfg
        samples = [usage_sample(r) for r in pool.load if r.state == READY and not r.group]
        needs = {s.instance_id: max(1, s.pending_blocks - s.free_blocks)
                 for s in samples if votes_to_drop(s, cfg.drop_usage)}
        gains = {g: pool.fusion_gain_blocks[g - 2]
                 for g in range(2, min(cfg.group_size, len(pool.fusion_gain_blocks) + 1) + 1)}
        if not needs or not gains:
            return []
        usage = {s.instance_id: s.usage for s in samples if s.instance_id not in needs}
        return [DropParameters(members, reason=f"greedy plan: {members[0]} lacks "
                               f"{needs[members[0]]} blocks; {len(members)} members gain "
                               f"{gains.get(len(members), 0)}",
                               stale_requests=STALE_MODE[cfg.stale_requests],
                               exchange_batch_size=cfg.exchange_batch_size)
                for members in greedy_drop_plan(needs, usage, gains) if len(members) >= 2]


class GroupRouter:
    """The group with the fewest outstanding requests, then its least-loaded ready member."""

    def __init__(self, groups: Groups) -> None:
        self.groups = groups

    def route(self, request: RequestView, candidates: Sequence[InstanceView]) -> str | None:
        key = self.groups.key
        members: dict[str, list[InstanceView]] = {}
        for inst in candidates:
            members.setdefault(inst.group or key.get(inst.instance_id, inst.instance_id), []).append(inst)
        names = list(members)  # candidates' order: ties go to the earlier group
        chosen = pick_group({i: sum(v.outstanding for v in members[name]) for i, name in enumerate(names)})
        assert chosen is not None  # candidates are never empty
        group = members[names[chosen]]
        return min(group, key=lambda v: v.outstanding).instance_id  # ties: the earlier member


def build_kunserve(cfg: KunServePolicyConfig, rng: np.random.Generator) -> PolicyBundle:
    groups = Groups(cfg)
    return PolicyBundle(router=GroupRouter(groups), autoscalers=[Sampler(cfg, groups), Checker(cfg, groups)],
                        name=cfg.kind)

