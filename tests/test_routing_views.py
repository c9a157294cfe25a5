"""Routers get live views (chironsim/sim/routing.py): every figure they can read must equal
the frozen snapshot ``Instance.view(now)`` at the routing instant, in every policy's runs —
migrations, fused groups, evictions, preemptions and stretches in progress included."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest
import yaml

from chironsim.contract.views import InstanceView
from chironsim.sim.routing import LiveInstanceView
from scenarios import build_simulation, scenario, synthetic

REGRESSION = Path(__file__).resolve().parents[1] / "configs" / "regression"
FIELDS = [f.name for f in fields(InstanceView)]
DERIVED = ("outstanding", "kv_free_blocks", "kv_utilization", "accepting")


def figures(view: InstanceView, classes: list[str]) -> tuple:
    return (tuple(getattr(view, name) for name in FIELDS)
            + tuple(getattr(view, name) for name in DERIVED)
            + tuple(view.running_of(c) for c in classes))


class Checking:
    """Wraps the policy's router: compares each candidate with its snapshot, then routes."""

    def __init__(self, router, classes: list[str]) -> None:
        self.router = router
        self.classes = classes
        self.calls = 0
        self.compared = 0
        self.mid_stretch = 0  # compared while the instance was inside a planned stretch

    def route(self, request, candidates):
        self.calls += 1
        for live in candidates:
            assert isinstance(live, LiveInstanceView) and isinstance(live, InstanceView)
            frozen = live.snapshot()
            assert type(frozen) is InstanceView
            assert figures(live, self.classes) == figures(frozen, self.classes), live.instance_id
            assert live == live and repr(live) == repr(live)  # dataclass methods read live fields
            self.compared += 1
            self.mid_stretch += live._inst._stretch is not None
        return self.router.route(request, candidates)


def run_checked(config: dict) -> Checking:
    sim = build_simulation(config)
    checking = Checking(sim.cluster.router, sorted(sim.classes))
    sim.cluster.router = checking
    sim.run()
    assert checking.calls > 0
    return checking


@pytest.mark.parametrize("name", ["chiron_burst_batch", "kunserve_burst", "llumnix_bursty",
                                  "static_two_class_swap"])
def test_live_views_equal_snapshots_in_the_regression_scenarios(name):
    config = yaml.safe_load((REGRESSION / f"{name}.yaml").read_text())["scenario"]
    checking = run_checked(config)
    assert checking.compared >= checking.calls


@pytest.mark.parametrize("router", ["least_outstanding", "kv_aware"])
def test_live_views_equal_snapshots_inside_stretches_with_preemption(router):
    """A small KV cache (recompute preemptions) and bursty arrivals: arrivals land inside
    fast-forwarded stretches, where KV used is a function of the time."""
    stream = synthetic({"kind": "gamma", "rate": 7.0, "cv": 2.0},
                       {"kind": "lognormal", "median": 250, "sigma": 0.8},
                       {"kind": "lognormal", "median": 250, "sigma": 0.8},
                       duration_s=25.0, max_prompt_tokens=1200, max_output_tokens=1000)
    config = scenario([stream], seed=4, instances=3,
                      engine={"gpu_memory_utilization": 0.195, "max_num_seqs": 48,
                              "max_num_batched_tokens": 1024},
                      policy={"kind": "static", "router": {"kind": router}})
    checking = run_checked(config)
    assert checking.compared == 3 * checking.calls
    assert checking.mid_stretch > checking.calls // 2
