"""The ``llumnix`` policy end to end (issue 9 items 4-6): dispatch from stale polls, migration
pairing through the live-migration mechanism, scaling by drain, and fast-forward identity."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import yaml

from chironsim.experiments import runner
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
