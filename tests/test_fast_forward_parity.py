"""Fast-forward on and off give identical tables under Chiron (DESIGN.md §8).

Chiron is the policy that reads an instance *between* its iteration boundaries: its local and
global autoscalers measure ITL from the cumulative decode counters of every instance each
tick, and a batch arrival to its empty cluster queue asks each instance whether it has room.
Inside a stretch both must read what stepping one iteration at a time would show at that
instant. They did not: the counters were those of the stretch's start (so the autoscaler's
ITL windows, and then its ``max_num_seqs`` decisions, differed with fast-forward on), and the
room check saw the free blocks net of the decode growth the stretch had claimed ahead (so an
arrival stepping placed at once waited for the stretch to end).
"""

from __future__ import annotations

import copy
from pathlib import Path

import yaml
from pandas.testing import assert_frame_equal

from chironsim.experiments.config import parse_config
from chironsim.experiments.runner import run
from chironsim.policies.routers import LeastOutstandingRouter
from chironsim.sim.world import Simulation
from chironsim.workload.spec import RequestSpec

REPO = Path(__file__).resolve().parents[1]
TABLES = ("requests", "events", "instances", "summary", "timeseries")


def with_fast_forward(config: dict, fast_forward: bool) -> dict:
    config = copy.deepcopy(config)
    config["cluster"].setdefault("engine", {})["fast_forward"] = fast_forward
    for pool in config["cluster"].get("pools", {}).values():
        if isinstance(pool.get("engine"), dict):
            pool["engine"]["fast_forward"] = fast_forward
    return config


def test_chiron_regression_scenario_is_identical_with_fast_forward_on_and_off() -> None:
    """The pinned Chiron scenario (burst + batch job, eviction with saved KV, the local
    max_num_seqs controller, a cold start, the batch pool from zero and back), whole."""
    path = REPO / "configs" / "regression" / "chiron_burst_batch.yaml"
    scenario = yaml.safe_load(path.read_text())["scenario"]
    on = run(with_fast_forward(scenario, True))
    off = run(with_fast_forward(scenario, False))
    kinds = set(on.events.kind)
    assert {"evict", "swap_in", "set_max_num_seqs", "scale_up"} <= kinds, sorted(kinds)
    for name in TABLES:
        assert_frame_equal(getattr(on, name), getattr(off, name), check_exact=True, obj=name)


def one_instance(specs: list[RequestSpec], fast_forward: bool, **engine) -> Simulation:
    """One batch-pool instance (a small KV cache: 371 blocks) fed by Chiron's kind of
    cluster queue for class ``batch``."""
    config = parse_config({
        "classes": {"batch": {"priority": 1, "slo": {"deadline": True}}},
        "workload": {"streams": [{"kind": "synthetic", "request_class": "batch",
                                  "arrival": {"kind": "poisson", "rate": 1},
                                  "prompt_tokens": {"kind": "fixed", "value": 10},
                                  "output_tokens": {"kind": "fixed", "value": 10},
                                  "num_requests": 1}]},
        "cluster": {"model": "llama-3-8b", "gpu": "h100-sxm", "pools": {"batch": {
            "instances": 1, "engine": {"max_num_seqs": 8, "gpu_memory_utilization": 0.2,
                                       "fast_forward": fast_forward, **engine}}}},
        "policy": {"kind": "static"},
    }, "<test>", Path.cwd())
    return Simulation(config.cluster, config.classes, iter(specs), LeastOutstandingRouter(), [],
                      duration_s=None, drain_s=3600, sample_interval_s=100.0,
                      queued_classes=frozenset({"batch"}))


def test_view_mid_stretch_reads_the_counters_stepping_would() -> None:
    """Views taken every 0.37 s (never at a boundary) read the same figures, decode counters
    included, with fast-forward on and off."""
    specs = [RequestSpec(0.1 * i, 300 + 50 * i, 400 + 100 * i, "batch", deadline=3600.0)
             for i in range(6)]
    seen = {}
    for fast_forward in (True, False):
        sim = one_instance(specs, fast_forward)
        inst = sim.cluster.instances["batch"][0]
        live = sim.cluster._live[inst.instance_id]
        views = seen[fast_forward] = []

        def sample(sim=sim, inst=inst, live=live, views=views):
            while True:
                yield sim.env.timeout(0.37)
                now = sim.env.now
                view = inst.view(now)
                views.append((view, live.decode_iterations, live.decode_seconds,
                              live.pure_decode_iterations, live.pure_decode_seconds))

        sim.env.process(sample())
        sim.run()
        assert inst.pure_decode_iterations > 100
    assert len(seen[True]) >= 15
    assert seen[True] == seen[False]
    assert any(view.decode_iterations != seen[True][0][0].decode_iterations
               for view, *_ in seen[True])


def test_arrival_to_empty_queue_sees_the_blocks_free_now() -> None:
    """A long decode stretch on a 371-block instance; at 5 s a 200-block batch request
    arrives to the empty cluster queue. About 268 blocks are free at that instant (stepping
    places it at once); a stretch had claimed its later growth ahead, leaving 180 free by the
    allocator's count, and the request waited ~18 s for the stretch to end."""
    specs = [RequestSpec(0.0, 1000, 3000, "batch", deadline=3600.0),
             RequestSpec(5.0, 3200, 10, "batch", deadline=3600.0)]
    outcomes = {}
    for fast_forward in (True, False):
        sim = one_instance(specs, fast_forward)
        sim.run()
        records = sorted(sim.request_records, key=lambda r: r.request_id)
        assert records[1].queue_s < 0.1  # placed at arrival, admitted at the next boundary
        outcomes[fast_forward] = [(r.first_token_time, r.finish_time) for r in records]
    assert outcomes[True] == outcomes[False]
