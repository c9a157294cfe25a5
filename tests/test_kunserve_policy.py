"""The registered ``kunserve`` policy: contract check, triggers wired to the fused-group
mechanism, dispatch by group, and the pinned regression scenario end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

import chironsim
from chironsim.contract.actions import DropParameters, RestoreParameters
from chironsim.contract.load import LoadReport
from chironsim.contract.states import FUSED, READY
from chironsim.contract.views import ClusterView, InstanceView, PoolView, RequestView
from chironsim.policies.kunserve.config import KunServePolicyConfig
from chironsim.policies.registry import build_policy, known_policies
from chironsim.testing import check_policy, default_views

SCENARIO = Path(__file__).parent.parent / "configs" / "regression" / "kunserve_burst.yaml"


@pytest.mark.parametrize("cfg", [
    KunServePolicyConfig(),
    KunServePolicyConfig(trigger_scope="all_groups", stale_requests="recompute", group_size=3),
    KunServePolicyConfig(restore=False, stale_requests="blocking_exchange", exchange_batch_size=2),
], ids=lambda cfg: str(cfg.model_dump(exclude_defaults=True)))
def test_kunserve_keeps_the_contract(cfg):
    assert "kunserve" in known_policies()
    check_policy(cfg)


def test_the_default_views_make_kunserve_drop():
    """Dropping is exercised by the check, not just allowed: the story's overloaded instances
    (usage >= 95 %, queued demand >= free blocks) vote their group into a drop."""
    cfg = KunServePolicyConfig()
    bundle = build_policy(cfg, np.random.default_rng(0))
    drops = [a for view in default_views() for scaler in bundle.autoscalers
             for a in scaler.on_tick(view) if isinstance(a, DropParameters)]
    assert drops, "kunserve emitted no DropParameters over the default views"
    assert drops[0].instances == ("interactive-0", "interactive-1")
    assert drops[0].stale_requests == "live" and drops[0].exchange_batch_size == 8


def _report(iid, used, pending, waiting, state=READY, group=""):
    return LoadReport(iid, "p", state, 1000, 1000 - used, 10, running=5, waiting=waiting,
                      waiting_prompt_blocks=float(pending), group=group)


def _checker(**kw):
    return build_policy(KunServePolicyConfig(**kw), np.random.default_rng(0)).autoscalers


def test_per_group_drops_only_the_voting_group_and_all_groups_every_group():
    hot = [_report("p-0", 990, 500, 4), _report("p-1", 200, 0, 0)]
    cold = [_report("p-2", 100, 0, 0), _report("p-3", 100, 0, 0)]
    view = ClusterView(1.0, {"p": PoolView("p", (), load=tuple(hot + cold))})
    per_group = [a for a in _checker()[1].on_tick(view)]
    assert per_group == [DropParameters(("p-0", "p-1"), per_group[0].reason, "live", 8)]
    every = _checker(trigger_scope="all_groups")[1].on_tick(view)
    assert [a.instances for a in every] == [("p-0", "p-1"), ("p-2", "p-3")]


def test_a_fused_group_restores_when_idle_and_falling_only():
    sampler, checker = _checker()

    def view(t, used, waiting=0):
        load = (_report("p-0", used, 0, waiting, group="p-0"),
                _report("p-1", 0, 0, 0, state=FUSED, group="p-0"))
        return ClusterView(t, {"p": PoolView("p", (), load=load)})
    for k, used in enumerate([600, 500, 400]):  # falling, ending at 40 % usage
        sampler.on_tick(view(0.5 * k, used))
    assert checker.on_tick(view(1.1, 400, waiting=1)) == []  # a queue: no restore
    actions = checker.on_tick(view(1.2, 400))
    assert actions == [RestoreParameters("p-0", actions[0].reason, 8)]
    sampler, checker = _checker()
    for k, used in enumerate([300, 400, 450]):  # rising: no restore at 45 %
        sampler.on_tick(view(0.5 * k, used))
    assert checker.on_tick(view(1.2, 450)) == []


def test_dispatch_picks_the_group_with_fewest_outstanding_then_its_emptiest_member():
    bundle = build_policy(KunServePolicyConfig(), np.random.default_rng(0))
    load = tuple(_report(f"p-{k}", 0, 0, 0) for k in range(4))
    bundle.autoscalers[1].on_tick(ClusterView(0.0, {"p": PoolView("p", (), load=load)}))

    def inst(iid, outstanding, group=""):
        return InstanceView(iid, "p", READY, outstanding, 0, 0, 100, 8, 0, group=group)
    request = RequestView(0, "c", 0, 10, 10, 0.0)
    # groups {p-0, p-1}: 3 + 3; {p-2, p-3}: 7 + 0 -> the first group, its first member (tie)
    assert bundle.router.route(request, [inst("p-0", 3), inst("p-1", 3), inst("p-2", 7),
                                         inst("p-3", 0)]) == "p-0"
    assert bundle.router.route(request, [inst("p-0", 3), inst("p-1", 3), inst("p-2", 5),
                                         inst("p-3", 0)]) == "p-3"
    assert bundle.router.route(request, [inst("p-0", 4), inst("p-1", 3), inst("p-2", 9),
                                         inst("p-3", 0)]) == "p-1"
    # a fused group is its leader (the follower is not a candidate)
    assert bundle.router.route(request, [inst("p-0", 7, "p-0"), inst("p-2", 5),
                                         inst("p-3", 3)]) == "p-0"


def test_the_regression_scenario_drops_exchanges_restores_and_splits():
    scenario = yaml.safe_load(SCENARIO.read_text())["scenario"]
    result = chironsim.run(scenario)
    kinds = list(result.events.kind)
    order = [k for k in kinds if k in ("drop", "restore", "split")]
    assert order == ["drop", "restore", "split"]
    exchanges = result.events[result.events.kind == "exchange"]
    assert set(exchanges.reason) == {"stale", "convert"}
    assert set(result.requests.status) == {"finished"}
    ts = result.timeseries
    assert ts.fused_members.max() == 2 and ts.fused_members.iloc[0] == 0
    assert ts.fused_members.iloc[-1] == 0
    fused = ts[ts.fused_members == 2]
    assert (fused.ready == 1).all()  # the follower is fused, not ready; the leader serves


# ----------------------------------------------------------------------------- greedy drop plan

def _greedy_view(*reports, gain_per_member=300):
    gains = tuple((g - 1) * gain_per_member for g in range(2, 9))
    return ClusterView(1.0, {"p": PoolView("p", (), load=tuple(reports), fusion_gain_blocks=gains)})


def test_the_greedy_plan_fuses_a_voter_with_its_least_used_partners():
    """p-2 votes (usage >= 95 %, demand >= free) and lacks 500 - 10 = 490 blocks: two partners
    (gain 2 x 300) cover it, one (300) does not; the least-used independents join it. p-3 is
    already fused and takes no part."""
    view = _greedy_view(_report("p-0", 300, 0, 0), _report("p-1", 100, 0, 0),
                        _report("p-2", 990, 500, 4), _report("p-3", 200, 0, 0, group="p-3"),
                        _report("p-4", 50, 0, 0))
    actions = _checker(drop_plan="greedy", group_size=4)[1].on_tick(view)
    assert [a.instances for a in actions] == [("p-2", "p-4", "p-1")]
    assert "greedy plan" in actions[0].reason
    # capped at group_size: the largest group allowed even when it does not cover the need
    capped = _checker(drop_plan="greedy", group_size=2)[1].on_tick(view)
    assert [a.instances for a in capped] == [("p-2", "p-4")]


def test_the_greedy_plan_does_nothing_without_a_voter_and_routes_per_instance():
    view = _greedy_view(*(_report(f"p-{k}", 500, 0, 0) for k in range(4)))
    bundle = build_policy(KunServePolicyConfig(drop_plan="greedy"), np.random.default_rng(0))
    assert bundle.autoscalers[1].on_tick(view) == []

    def inst(iid, outstanding):
        return InstanceView(iid, "p", READY, outstanding, 0, 0, 100, 8, 0)
    request = RequestView(0, "c", 0, 10, 10, 0.0)
    # no static groups: the instance with the fewest outstanding, whatever its neighbour holds
    assert bundle.router.route(request, [inst("p-0", 3), inst("p-1", 0), inst("p-2", 1),
                                         inst("p-3", 1)]) == "p-1"


def test_the_greedy_plan_refuses_the_released_codes_all_groups_scope():
    with pytest.raises(ValueError, match="all_groups"):
        KunServePolicyConfig(drop_plan="greedy", trigger_scope="all_groups")


def test_the_greedy_plan_keeps_the_contract_and_drops_over_the_default_views():
    cfg = KunServePolicyConfig(drop_plan="greedy")
    check_policy(cfg)
    bundle = build_policy(cfg, np.random.default_rng(0))
    drops = [a for view in default_views() for scaler in bundle.autoscalers
             for a in scaler.on_tick(view) if isinstance(a, DropParameters)]
    assert drops


def test_the_regression_scenario_runs_with_the_greedy_plan():
    """The pool's views carry the gains the simulator computes (perf.drop), and a run with the
    greedy plan fuses, restores and splits with every request accounted for."""
    scenario = yaml.safe_load(SCENARIO.read_text())["scenario"]
    scenario["policy"]["drop_plan"] = "greedy"
    result = chironsim.run(scenario)
    kinds = [k for k in result.events.kind if k in ("drop", "split")]
    assert kinds[:1] == ["drop"] and "split" in kinds
    assert set(result.requests.status) == {"finished"}
    assert "greedy plan" in result.events[result.events.kind == "drop"].reason.iloc[0]


def test_pool_views_carry_the_fusion_gains_of_the_drop_formula():
    from chironsim.catalog import get_gpu, get_model
    from chironsim.perf.drop import fused_blocks_gained

    scenario = yaml.safe_load(SCENARIO.read_text())["scenario"]
    seen = []

    class Spy:
        interval, observes = 1.0, "load"

        def on_tick(self, view):
            seen.append(next(iter(view.pools.values())).fusion_gain_blocks)
            return []
    from chironsim.experiments.config import parse_config
    from chironsim.experiments.runner import build_simulation
    sim, _ = build_simulation(parse_config(scenario, "<t>", SCENARIO.parent), SCENARIO.parent)
    sim.autoscalers.append(Spy())
    sim.run()
    cluster = scenario["cluster"]
    model, gpu = get_model(cluster["model"]), get_gpu(cluster["gpu"])
    tp = next(iter(cluster["pools"].values())).get("tp", 1)
    assert seen[0][:3] == tuple(fused_blocks_gained(model, gpu, tp, g) for g in (2, 3, 4))
    # more members free more blocks when they split the 32 layers evenly; otherwise the member
    # keeping the most layers bounds the group, so the gain is not monotone in g
    divisors = [seen[0][g - 2] for g in (2, 4, 8, 16, 32)]
    assert all(b > a > 0 for a, b in zip(divisors, divisors[1:]))
