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

import pytest
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


# --- every policy, on random small scenarios ----------------------------------------------
#
# The tests above pin Chiron, and test_determinism / test_llumnix_policy / test_fusion one
# scenario each for static, Llumnix and a fused group. Here hypothesis draws small scenarios
# (load, lengths, cache size, batch seats, instances, seed) for every policy kind and checks
# that fast-forward on and off give identical tables: the planner's stretches, their cuts on
# a wake and the reads inside them must change speed only. Derandomized and few examples, so
# the file stays quick.

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

POLICIES = ("static", "reactive", "chiron", "llumnix", "kunserve")


def small_scenario(policy: str, seed: int, rate: float, prompt: int, output: int,
                   instances: int, memory: float, seats: int) -> dict:
    """A 20-s scenario of ``policy`` with lognormal lengths around ``prompt`` / ``output`` and
    a small cache (``memory``: gpu_memory_utilization), so preemptions and wakes happen."""
    interactive = {"kind": "synthetic", "request_class": "interactive",
                   "arrival": {"kind": "poisson", "rate": rate},
                   "prompt_tokens": {"kind": "lognormal", "median": prompt, "sigma": 0.8},
                   "output_tokens": {"kind": "lognormal", "median": output, "sigma": 0.8},
                   "max_prompt_tokens": 2000, "max_output_tokens": 600, "duration_s": 20}
    config = {
        "name": "ff-parity", "seed": seed, "duration_s": 20, "drain_s": 300,
        "sample_interval_s": 0.7,
        "classes": {"interactive": {"priority": 0, "slo": {"ttft": 2.0, "tpot": 0.1}}},
        "workload": {"streams": [interactive]},
        "cluster": {"model": "llama-3-8b", "gpu": "h100-sxm",
                    "engine": {"gpu_memory_utilization": memory, "max_num_seqs": seats,
                               "max_num_batched_tokens": 1024},
                    "pools": {"default": {"instances": instances}}},
        "policy": {"kind": policy},
    }
    if policy == "static":
        config["policy"]["router"] = {"kind": "least_outstanding"}
    elif policy == "reactive":
        config["policy"].update(metric="utilization", target=0.5, interval_s=2,
                                scale_down_stabilization_s=4, cooldown_s=2, min_instances=1,
                                max_instances=instances + 2)
        config["cluster"]["lifecycle"] = {"provision_s": 1, "load_bandwidth_gbps": 16.0,
                                          "engine_startup_s": 1}
    elif policy == "chiron":
        config["classes"]["batch"] = {"priority": 1, "slo": {"deadline": True}}
        config["workload"]["streams"].append({
            "kind": "batch", "request_class": "batch", "num_requests": 30, "submit_at": 2,
            "deadline_s": 200, "prompt_tokens": {"kind": "lognormal", "median": prompt, "sigma": 0.5},
            "output_tokens": {"kind": "lognormal", "median": output, "sigma": 0.5},
            "max_prompt_tokens": 2000, "max_output_tokens": 600})
        config["cluster"]["pools"] = {
            "interactive": {"instances": 1, "classes": ["interactive"]},
            "mixed": {"instances": instances},
            "batch": {"instances": 0, "classes": ["batch"]}}
        config["cluster"]["lifecycle"] = {"provision_s": 1, "load_bandwidth_gbps": 16.0,
                                          "engine_startup_s": 1}
        config["policy"].update(itl_slo={"interactive": 0.05, "batch": 1.0}, b_min=4, cold_start_s=3)
    elif policy == "kunserve":
        # one group of 2 (LLaMA-7B on A10: weights large next to the cache), as the
        # regression scenario, so a burst makes it drop layers and exchange KV
        config["cluster"].update(model="llama-7b", gpu="a10")
        config["cluster"]["engine"] = {"max_num_seqs": seats}
        config["cluster"]["pools"]["default"]["instances"] = 2
        config["workload"]["streams"].append({
            "kind": "batch", "request_class": "interactive", "num_requests": 20, "submit_at": 3,
            "window_s": 2, "deadline_s": 600, "prompt_tokens": {"kind": "fixed", "value": 1200},
            "output_tokens": {"kind": "fixed", "value": output + 200}})
    return config


@pytest.mark.parametrize("policy", POLICIES)
@settings(max_examples=3, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), rate=st.floats(1.0, 6.0), prompt=st.integers(100, 1200),
       output=st.integers(20, 300), instances=st.integers(1, 3),
       memory=st.sampled_from([0.195, 0.22, 0.5]), seats=st.sampled_from([8, 32, 128]))
def test_random_small_scenarios_are_identical_with_fast_forward_on_and_off(
        policy, seed, rate, prompt, output, instances, memory, seats) -> None:
    scenario = small_scenario(policy, seed, rate, prompt, output, instances, memory, seats)
    on = run(with_fast_forward(scenario, True))
    off = run(with_fast_forward(scenario, False))
    assert len(on.requests) > 0
    for name in TABLES:
        assert_frame_equal(getattr(on, name), getattr(off, name), check_exact=True, obj=name)
