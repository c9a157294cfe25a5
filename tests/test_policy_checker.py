"""The public policy contract check: every built-in policy passes it, and each rule bites."""

from __future__ import annotations

import importlib
import itertools
import sys
import textwrap

import numpy as np
import pytest

from chironsim.contract.actions import Drain, Migrate, ScaleTo, SetMaxNumSeqs
from chironsim.policies.bundle import PolicyBundle
from chironsim.policies.chiron import ChironPolicyConfig
from chironsim.policies.llumnix.config import LlumnixPolicyConfig
from chironsim.policies.registry import build_policy
from chironsim.contract.states import DRAINING, LOADING, PROVISIONING, READY
from chironsim.policies.reactive import ReactivePolicyConfig
from chironsim.policies.routers import RoundRobinRouter
from chironsim.policies.static import StaticPolicyConfig
from chironsim.testing import check_policy, default_views, simpy_imports


@pytest.mark.parametrize("cfg", [
    StaticPolicyConfig(),
    StaticPolicyConfig(router={"kind": "random"}),
    ReactivePolicyConfig(target=0.7),
    ReactivePolicyConfig(target=2.0, metric="queue_length", cooldown_s=0.0, interval_s=1.0),
    ChironPolicyConfig(),
    ChironPolicyConfig(local=False),
    ChironPolicyConfig(global_scaling=False),
    ChironPolicyConfig(mixed=False),
    LlumnixPolicyConfig(),
    LlumnixPolicyConfig(dispatch="infaas", migration=False, priority_agnostic=True),
    LlumnixPolicyConfig(dispatch="round_robin", migration=False, scaling=False),
    LlumnixPolicyConfig(request_choice="shortest_running", headroom_blocks={0: 200},
                        scaling_sustain=3),
], ids=lambda cfg: f"{cfg.kind}:{cfg.model_dump(exclude_defaults=True)}")
def test_builtin_policies_keep_the_contract(cfg):
    check_policy(cfg)


def test_the_default_views_make_llumnix_migrate():
    """Migration is exercised by the check, not just allowed: the story's overload beside
    freshly started instances pairs sources with destinations, and a drained instance hands
    its work over."""
    bundle = build_policy(LlumnixPolicyConfig(), np.random.default_rng(0))
    views = default_views()
    moves = [action for view in views for poller in bundle.autoscalers[:1]
             for action in poller.on_tick(view) if isinstance(action, Migrate)]
    assert moves, "llumnix emitted no Migrate over the default views"
    assert {m.reason for m in moves} >= {"overloaded", "terminating"}


def test_chiron_keeps_the_contract_under_other_pool_names():
    cfg = ChironPolicyConfig(interactive_pool="fast", mixed_pool="flex", batch_pool="bulk")
    check_policy(cfg, views=default_views(seed=3, pools=("fast", "flex", "bulk")), seeds=(5,))


# --- the default views ---------------------------------------------------------------------


def test_default_views_cover_the_story_and_are_reproducible():
    views = default_views()
    assert views == default_views() and views != default_views(seed=1)
    assert all(b.time > a.time for a, b in zip(views, views[1:]))
    states = {i.state for v in views for p in v.pools.values() for i in p.instances}
    assert states == {PROVISIONING, LOADING, READY, DRAINING}
    lengths = [v.queues["batch"].length if "batch" in v.queues else 0 for v in views]
    assert lengths[0] == 0 and max(lengths) >= 10_000 and lengths[-1] == 0
    near = [v for v in views if "batch" in v.queues and v.queues["batch"].length
            and v.queues["batch"].earliest_deadline - v.time < 60]
    assert near, "some view must have a long queue whose deadline is near"
    ids = [{i.instance_id for p in v.pools.values() for i in p.instances} for v in views]
    assert any(a - b for a, b in zip(ids, ids[1:])), "some instance must disappear"


def test_default_view_counters_never_go_backwards():
    last: dict[str, tuple[int, int, float]] = {}
    for view in default_views(seed=2):
        for pool in view.pools.values():
            for inst in pool.instances:
                counters = (inst.tokens_generated, inst.decode_iterations, inst.decode_seconds)
                previous = last.get(inst.instance_id, (0, 0, 0.0))
                assert all(now >= before for now, before in zip(counters, previous))
                last[inst.instance_id] = counters


# --- each rule bites -----------------------------------------------------------------------


class _Scripted:
    """An autoscaler that returns ``make(view)`` at every tick."""

    def __init__(self, make, interval: float = 5.0) -> None:
        self.make = make
        self.interval = interval

    def on_tick(self, view):
        return self.make(view)


def bundle_with(make=lambda view: [], router=None, interval: float = 5.0):
    def build(rng: np.random.Generator) -> PolicyBundle:
        return PolicyBundle(router=router or RoundRobinRouter(),
                            autoscalers=[_Scripted(make, interval)], name="scripted")
    return build


def test_a_well_behaved_builder_passes():
    check_policy(bundle_with(lambda view: [ScaleTo("batch", 2, "fine")]))


@pytest.mark.parametrize(("make", "message"), [
    (lambda v: [ScaleTo("batch", 9)], r"outside pool 'batch' bounds \[0, 5\]"),
    (lambda v: [ScaleTo("interactive", 0)], r"outside pool 'interactive' bounds \[1, 6\]"),
    (lambda v: [ScaleTo("nowhere", 1)], "names no pool in the view"),
    (lambda v: [Drain("ghost-7")], "names no instance"),
    (lambda v: [SetMaxNumSeqs("interactive-0", 0)], "below 1"),
    (lambda v: [SetMaxNumSeqs("ghost", 8)], "names no instance"),
    (lambda v: ["scale up please"], "not a registered action"),
    (lambda v: [ScaleTo("batch", 2)] if v.time < 100 else 1 / 0, "ZeroDivisionError"),
])
def test_invalid_actions_are_reported_with_the_view(make, message):
    with pytest.raises(AssertionError, match=message) as err:
        check_policy(bundle_with(make))
    assert "view" in str(err.value)


def test_a_bad_interval_is_reported():
    with pytest.raises(AssertionError, match="interval"):
        check_policy(bundle_with(interval=0.0))


def test_a_router_returning_a_stranger_is_reported():
    class Stray:
        def route(self, request, candidates):
            return "not-a-candidate"

    with pytest.raises(AssertionError, match="not one of the candidates"):
        check_policy(bundle_with(router=Stray()))


def test_hidden_shared_state_is_caught_as_nondeterminism():
    shared = itertools.count()  # survives across builds: the second build sees other values

    class Drifting:
        def route(self, request, candidates):
            return candidates[next(shared) % len(candidates)].instance_id

    with pytest.raises(AssertionError, match="not deterministic"):
        check_policy(bundle_with(router=Drifting()))


def test_unseeded_randomness_is_caught_as_nondeterminism():
    def build(rng):
        own = np.random.default_rng()  # ignores the seed it was given

        class Lucky:
            def route(self, request, candidates):
                return candidates[int(own.integers(len(candidates)))].instance_id

        return PolicyBundle(router=Lucky(), autoscalers=[], name="lucky")

    with pytest.raises(AssertionError, match="not deterministic"):
        check_policy(build)


@pytest.fixture
def plugin_package(tmp_path, monkeypatch):
    """A throwaway package ``chk_plugin`` whose router module pulls in SimPy indirectly."""
    root = tmp_path / "chk_plugin"
    root.mkdir()
    (root / "__init__.py").write_text("")
    (root / "router.py").write_text(textwrap.dedent("""
        from chk_plugin import helpers

        class Router:
            def route(self, request, candidates):
                return candidates[0].instance_id
    """))
    (root / "helpers.py").write_text(textwrap.dedent("""
        def clock():
            import simpy.core  # only when called, but still a SimPy dependency
            return simpy.core
    """))
    (root / "clean.py").write_text("from . import router as _router\nimport numpy\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    yield importlib.import_module("chk_plugin.router")
    for name in [m for m in sys.modules if m == "chk_plugin" or m.startswith("chk_plugin.")]:
        del sys.modules[name]


def test_simpy_imports_follow_the_package_transitively(plugin_package):
    assert simpy_imports(["chk_plugin.clean"]) == {"chk_plugin.helpers": ["simpy.core"]}
    assert simpy_imports(["chironsim.policies.chiron.router", "chironsim.testing"]) == {}
    assert "chironsim.sim.cluster" in simpy_imports(["chironsim.sim.cluster"])


def test_a_policy_that_depends_on_simpy_is_rejected(plugin_package):
    build = bundle_with(router=plugin_package.Router())
    with pytest.raises(AssertionError, match=r"must not import SimPy.*chk_plugin\.helpers"):
        check_policy(build)


def test_check_policy_rejects_what_is_not_a_policy():
    with pytest.raises(TypeError, match="policy config or a builder"):
        check_policy(42)
    with pytest.raises(AssertionError, match="not a PolicyBundle"):
        check_policy(lambda rng: "bundle")
