"""The ``llumnix`` policy end to end (issue 9 items 4-6): dispatch from stale polls, migration
pairing through the live-migration mechanism, scaling by drain, and fast-forward identity."""

from __future__ import annotations

import copy
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml

from chironsim.contract.states import DRAINING, LOADING, PROVISIONING, READY
from chironsim.errors import ConfigError
from chironsim.experiments import runner
from chironsim.experiments.config import parse_config
from chironsim.metrics.slo import RequestClassSpec
from chironsim.policies.llumnix.config import LlumnixPolicyConfig
from chironsim.policies.registry import build_policy
from chironsim.sim.config import ClusterConfig, PoolConfig
from chironsim.sim.world import Simulation
from chironsim.workload.spec import RequestSpec

REGRESSION = Path(__file__).resolve().parents[1] / "configs" / "regression" / "llumnix_bursty.yaml"


def simulate(specs, policy: dict, instances: int = 4, **pool) -> Simulation:
    bundle = build_policy(LlumnixPolicyConfig(**policy), np.random.default_rng(0))
    cluster = ClusterConfig(model="llama-7b", gpu="a10",
                            pools={"default": PoolConfig(instances=instances, **pool)})
    sim = Simulation(cluster, {"default": RequestClassSpec()}, iter(specs), bundle.router,
                     list(bundle.autoscalers), duration_s=None, drain_s=600.0,
                     sample_interval_s=1.0)
    sim.run()
    return sim


def first_instance(sim: Simulation) -> Counter:
    return Counter(r.instances.split(";")[0] for r in sim.request_records)


def test_a_burst_inside_one_poll_interval_lands_on_one_instance():
    # Load instance by instance first, so the poll before the burst has a clear freest one.
    warm = [RequestSpec(0.2 * i, 400, 300) for i in range(6)]
    burst = [RequestSpec(2.01 + 0.001 * i, 200, 50) for i in range(20)]  # within one poll
    sim = simulate(warm + burst, {"migration": False, "scaling": False})
    placed = Counter(r.instances.split(";")[0] for r in sim.request_records
                     if r.request_id >= len(warm))
    assert len(placed) == 1 and sum(placed.values()) == 20
    # Round-robin spreads the same burst.
    sim = simulate(warm + burst, {"dispatch": "round_robin", "migration": False,
                                  "scaling": False})
    placed = Counter(r.instances.split(";")[0] for r in sim.request_records
                     if r.request_id >= len(warm))
    assert len(placed) == 4


def test_migration_rebalances_the_instance_a_burst_overloaded():
    burst = [RequestSpec(0.001 * i, 1200, 400) for i in range(40)]
    with_migration = simulate(burst, {"scaling": False})
    without = simulate(burst, {"scaling": False, "migration": False})
    moved = [e for e in with_migration.events if e["kind"] == "migrate_done"]
    assert len(moved) >= 3
    assert not [e for e in without.events if e["kind"].startswith("migrate")]
    assert sum(r.migrations for r in with_migration.request_records) == len(moved)
    assert {e["instance_id"] for e in moved} - {"default-0"}  # they left the burst's instance
    assert all(r.status == "finished" for r in with_migration.request_records)


def test_a_draining_instance_hands_over_its_work_and_stops():
    # Steady light load on 4 instances: the pooled freeness is high, so the scaler drains one
    # (fewest running) at 10 s while it still holds requests; migration empties it.
    specs = [RequestSpec(0.05 * i, 300, 1500) for i in range(60)]
    sim = simulate(specs, {"scale_down_threshold": 20.0, "scale_up_threshold": 1.0},
                   min_instances=2)
    drains = [e for e in sim.events if e["kind"] == "scale_down"]
    assert drains, "the scaler should drain an instance"
    drained, at = drains[0]["instance_id"], drains[0]["time"]
    stopped = [e["time"] for e in sim.events
               if e["kind"] == "instance_stopped" and e["instance_id"] == drained]
    assert stopped, f"{drained} never stopped"
    handed = [e for e in sim.events if e["kind"] == "migrate_done"
              and e["detail"].startswith(f"src={drained};") and at <= e["time"] <= stopped[0]]
    assert handed, "the drained instance should hand its requests over by migration"
    record = next(r for r in sim.cluster.instance_records if r.instance_id == drained)
    # It stopped long before its requests could have finished in place (1,500 tokens each).
    assert record.stop_time - at < 5.0
    assert all(r.status == "finished" for r in sim.request_records)


def _regression_scenario(fast_forward: bool) -> dict:
    scenario = yaml.safe_load(REGRESSION.read_text(encoding="utf-8"))["scenario"]
    scenario["cluster"].setdefault("engine", {})["fast_forward"] = fast_forward
    return scenario


def test_fast_forward_on_and_off_give_identical_tables_with_llumnix_running():
    a, b = (runner.run(_regression_scenario(ff)) for ff in (True, False))
    assert (a.events.kind == "migrate_done").sum() >= 5
    for name in ("requests", "instances", "events", "timeseries", "summary"):
        left, right = getattr(a, name), getattr(b, name)
        assert left.equals(right), name


def _one_seat_scenario(policy: dict, engine: dict | None = None) -> dict:
    """One instance with one seat: a high-priority arrival behind two normal ones overtakes
    the second under priority scheduling and waits its turn under FCFS."""
    cluster = {"model": "llama-7b", "gpu": "a10",
               "engine": {"max_num_seqs": 1, **(engine or {})},
               "pools": {"default": {"instances": 1}}}
    return {
        "name": "one-seat", "seed": 0, "drain_s": 60,
        "classes": {"high": {"priority": 0}, "normal": {"priority": 1}},
        "workload": {"streams": [
            {"kind": "batch", "request_class": cls, "num_requests": n, "submit_at": start,
             "window_s": 0.002 * n, "deadline_s": 600,
             "prompt_tokens": {"kind": "fixed", "value": 100},
             "output_tokens": {"kind": "fixed", "value": 50}}
            for cls, start, n in (("normal", 0.0, 2), ("high", 0.01, 1))]},
        "cluster": cluster,
        "policy": {"kind": "llumnix", "scaling": False, "migration": False, **policy},
    }


def _finish_order(result) -> list[str]:
    return list(result.requests.sort_values("finish_time").request_class)


def test_priority_agnostic_makes_the_engines_priority_agnostic():
    """Llumnix-base declares its FCFS engine itself (PolicyBundle.engine_settings), so the
    scenario need not also turn engine.priority_scheduling off."""
    bundle = build_policy(LlumnixPolicyConfig(priority_agnostic=True), np.random.default_rng(0))
    assert dict(bundle.engine_settings) == {"priority_scheduling": False}
    assert not build_policy(LlumnixPolicyConfig(), np.random.default_rng(0)).engine_settings
    assert _finish_order(runner.run(_one_seat_scenario({}))) == ["normal", "high", "normal"]
    agnostic = runner.run(_one_seat_scenario({"priority_agnostic": True}))
    assert _finish_order(agnostic) == ["normal", "normal", "high"]


def test_priority_agnostic_with_the_engine_switch_written_too_is_unchanged():
    """Scenarios that already turned the engine switch off beside priority_agnostic (the
    Llumnix experiment's baselines) give identical tables with or without it."""
    base = yaml.safe_load(REGRESSION.read_text(encoding="utf-8"))["scenario"]
    for variant in ({"priority_agnostic": True},
                    {"priority_agnostic": True, "dispatch": "infaas", "migration": False}):
        both = copy.deepcopy(base)
        both["policy"].update(variant)
        both["cluster"]["engine"] = {"priority_scheduling": False}
        alone = copy.deepcopy(both)
        del alone["cluster"]["engine"]
        a, b = runner.run(both), runner.run(alone)
        for name in ("requests", "instances", "events", "timeseries", "summary"):
            assert getattr(a, name).equals(getattr(b, name)), (variant, name)


@pytest.mark.parametrize("where", ["cluster", "pool"])
def test_priority_scheduling_true_beside_priority_agnostic_is_a_config_error(where):
    scenario = _one_seat_scenario({"priority_agnostic": True})
    if where == "cluster":
        scenario["cluster"]["engine"]["priority_scheduling"] = True
        key = "cluster.engine.priority_scheduling"
    else:
        scenario["cluster"]["pools"]["default"]["engine"] = {"priority_scheduling": True}
        key = "cluster.pools.default.engine.priority_scheduling"
    with pytest.raises(ConfigError) as err:
        parse_config(scenario, "<test>", Path.cwd())
    assert key in str(err.value) and "policy.priority_agnostic" in str(err.value)
    # Consistent or left to the policy: accepted.
    scenario["cluster"]["engine"]["priority_scheduling"] = False
    scenario["cluster"]["pools"]["default"].pop("engine", None)
    parse_config(scenario, "<test>", Path.cwd())


def test_a_pool_that_starts_empty_grows_and_serves():
    """instances: 0 is accepted with the scaler on (the feasibility check asks the policy's
    growable_pools) and the first check adds an instance for the requests waiting; without
    the scaler the same scenario is a config error, since nothing would ever serve them."""
    scenario = yaml.safe_load(REGRESSION.read_text(encoding="utf-8"))["scenario"]
    scenario["cluster"]["pools"]["default"].update(instances=0, min_instances=0)
    config = parse_config(scenario, "<test>", Path.cwd())
    result = runner.run(config)
    assert (result.requests.status == "finished").all()
    ups = result.events[result.events.kind == "scale_up"]
    first = ups.iloc[0]
    assert first.time == pytest.approx(10.0)  # the first scaling check
    assert "no ready instance" in first.reason
    assert len(result.instances) >= 1
    off = copy.deepcopy(scenario)
    off["policy"]["scaling"] = False
    with pytest.raises(ConfigError, match="never adds instances"):
        parse_config(off, "<test>", Path.cwd())


def test_a_load_view_counts_instances_by_state_like_a_full_view():
    """A poller's view carries load reports and no instance views; PoolView.count and
    .active read the reports' states there (they used to say 0 active in every load view)."""
    scenario = yaml.safe_load(REGRESSION.read_text(encoding="utf-8"))["scenario"]
    config = parse_config(scenario, "<test>", Path.cwd())
    sim, _ = runner.build_simulation(config, Path.cwd())
    for scaler in sim.autoscalers:
        sim.env.process(sim._ticker(scaler))
    sim.env.process(sim._arrivals())
    states = (PROVISIONING, LOADING, READY, DRAINING)
    seen = set()
    for t in range(0, 200, 2):
        sim.env.run(until=float(t) + 0.5)
        full, load = sim.cluster.view(), sim.cluster.load_view()
        for name, pool in full.pools.items():
            polled = load.pools[name]
            assert not polled.instances and len(polled.load) == len(pool.instances)
            assert polled.active == pool.active > 0
            for state in states:
                assert polled.count(state) == pool.count(state), (t, state)
                if pool.count(state):
                    seen.add(state)
    assert {PROVISIONING, READY} <= seen  # the run scaled up: some instances were starting


def test_policy_migration_limits_are_bounded_by_the_mechanism():
    """cluster.migration.max_out/max_in are what can happen; the pairing's own limits may be
    lower, never higher (a config error naming both keys), and do not matter without
    migration."""
    scenario = yaml.safe_load(REGRESSION.read_text(encoding="utf-8"))["scenario"]
    for key, cluster_key in (("max_migrations_out", "max_out"), ("max_migrations_in", "max_in")):
        over = copy.deepcopy(scenario)
        over["policy"][key] = 2
        with pytest.raises(ConfigError) as err:
            parse_config(over, "<test>", Path.cwd())
        message = str(err.value)
        assert f"policy.{key}" in message and f"cluster.migration.{cluster_key}: 1" in message
        raised = copy.deepcopy(over)
        raised["cluster"]["migration"] = {cluster_key: 2}
        parse_config(raised, "<test>", Path.cwd())
        lower = copy.deepcopy(scenario)
        lower["cluster"]["migration"] = {cluster_key: 4}
        parse_config(lower, "<test>", Path.cwd())  # the policy may ask for fewer
        off = copy.deepcopy(over)
        off["policy"]["migration"] = False
        parse_config(off, "<test>", Path.cwd())
