"""Relations between runs that must hold whatever the exact numbers (DESIGN.md §8, "Metamorphic").

A faster GPU is never slower; more static instances never meet fewer SLOs; a request alone in
the system takes exactly its bare service time; and scaling every time in the system (arrival
gaps and the perf model) by k scales every latency by k.
"""

from __future__ import annotations

import numpy as np
import pytest

from chironsim.experiments.runner import run
from chironsim.perf.roofline import IterationTimeModel
from chironsim.sim import cluster as cluster_module
from scenarios import perf_model, scenario, service_time, synthetic

A100, H100 = "a100-80gb", "h100-sxm"
BUDGET = 1024  # max_num_batched_tokens in the lone-request runs: long prompts are chunked


def lone_requests(gpu: str, seed: int = 21):
    """Requests ~200 s apart on one instance: each is alone in the system (checked by callers)."""
    stream = synthetic({"kind": "gamma", "rate": 0.005, "cv": 0.01},
                       {"kind": "uniform", "min": 1, "max": 6000},
                       {"kind": "uniform", "min": 1, "max": 1500}, num_requests=40)
    return run(scenario([stream], seed=seed, gpu=gpu, engine={"max_num_batched_tokens": BUDGET},
                        drain_s=1000.0))


@pytest.fixture(scope="module")
def lone():
    return {gpu: lone_requests(gpu).requests for gpu in (A100, H100)}


def assert_isolated(req) -> None:
    assert (req.status == "finished").all()
    overlap = req.arrival.to_numpy()[1:] <= req.finish_time.to_numpy()[:-1]
    assert not overlap.any(), "requests overlapped; the near-zero-load premise does not hold"


@pytest.mark.parametrize("gpu", [A100, H100])
def test_lone_request_takes_bare_service_time(lone, gpu):
    """e2e = Σ prefill chunk iterations + Σ decode iterations from the perf model, to 1e-9."""
    req = lone[gpu]
    assert_isolated(req)
    assert (req.prompt_tokens > BUDGET).sum() > 10, "long prompts must exercise chunked prefill"
    perf = perf_model(gpu=gpu)
    expected = np.array([service_time(perf, p, o, BUDGET)
                         for p, o in zip(req.prompt_tokens, req.output_tokens)])
    np.testing.assert_allclose(req.e2e.to_numpy(), expected, rtol=1e-9, atol=0)
    assert (req.preemptions == 0).all()


def test_faster_gpu_is_never_slower_alone(lone):
    a100, h100 = lone[A100], lone[H100]
    assert_isolated(a100)
    assert_isolated(h100)
    assert (a100.prompt_tokens.to_numpy() == h100.prompt_tokens.to_numpy()).all()
    assert (a100.output_tokens.to_numpy() == h100.output_tokens.to_numpy()).all()
    assert (h100.e2e.to_numpy() < a100.e2e.to_numpy()).all()
    assert (h100.ttft.to_numpy() < a100.ttft.to_numpy()).all()


def test_faster_gpu_is_never_slower_under_load():
    stream = synthetic({"kind": "gamma", "rate": 5.0, "cv": 1.5},
                       {"kind": "lognormal", "median": 600, "sigma": 0.9},
                       {"kind": "lognormal", "median": 150, "sigma": 0.9},
                       duration_s=60.0, max_prompt_tokens=6000, max_output_tokens=1000)
    results = {gpu: run(scenario([stream], seed=9, gpu=gpu, instances=1)) for gpu in (A100, H100)}
    a100, h100 = results[A100].requests, results[H100].requests
    assert (a100.status == "finished").all() and (h100.status == "finished").all()
    for metric in ("ttft", "tpot", "e2e"):
        assert h100[metric].mean() < a100[metric].mean(), metric
    # Not a trivially light load: batches formed.
    assert results[A100].instances.tokens_generated.sum() / results[A100].instances.iterations.sum() > 3


def test_more_static_instances_never_fewer_slo_met():
    stream = synthetic({"kind": "gamma", "rate": 30.0, "cv": 2.0},
                       {"kind": "lognormal", "median": 800, "sigma": 0.9},
                       {"kind": "lognormal", "median": 150, "sigma": 0.9},
                       duration_s=30.0, max_prompt_tokens=6000, max_output_tokens=1000)
    classes = {"default": {"priority": 0, "slo": {"ttft": 0.5, "tpot": 0.03}}}
    met = {}
    for n in (1, 2, 4):
        summary = run(scenario([stream], seed=13, instances=n, classes=classes)).summary
        row = summary.set_index("request_class").loc["all"]
        met[n] = (int(row.slo_met), float(row.slo_attainment))
    print(f"\nSLO met by instances: {met}")
    assert met[1][0] <= met[2][0] <= met[4][0], met
    assert met[1][1] < 0.9, "one instance must be overloaded for the comparison to mean anything"
    assert met[1][0] < met[4][0]


def scaled_perf_model(k: float):
    """The roofline model with every iteration k times longer."""

    class Scaled(IterationTimeModel):
        def iteration_time(self, *args):
            return k * super().iteration_time(*args)

    return Scaled


def time_scaling_scenario(k: float) -> dict:
    """Batching and KV preemption; arrival rate ÷ k and every configured time × k."""
    stream = synthetic({"kind": "poisson", "rate": 8.0 / k},
                       {"kind": "lognormal", "median": 300, "sigma": 0.8},
                       {"kind": "lognormal", "median": 200, "sigma": 0.8},
                       duration_s=30.0 * k, max_prompt_tokens=1500, max_output_tokens=800)
    return scenario([stream], seed=17, instances=2, duration_s=30.0 * k, drain_s=600.0 * k,
                    sample_interval_s=1000.0 * k,
                    engine={"gpu_memory_utilization": 0.195, "max_num_seqs": 32})


def test_scaling_all_times_scales_latencies(monkeypatch):
    """k = 2: numpy draws Exp(k/λ) as k·Exp(1/λ), and doubling is exact in binary floating
    point, so arrival times, iteration times and every sum of them double *exactly*.

    There is no config knob that scales the perf model (efficiency factors and GPU specs are
    catalog data), so the test substitutes a k-times-slower IterationTimeModel where the
    cluster builds its pools. Lifecycle times are not scaled: the policy is static and no
    instance starts during the run.
    """
    k = 2.0
    base = run(time_scaling_scenario(1.0))
    monkeypatch.setattr(cluster_module, "IterationTimeModel", scaled_perf_model(k))
    slow = run(time_scaling_scenario(k))
    assert base.requests.preemptions.sum() > 10 and (base.requests.status == "finished").all()
    pairs = [
        (base.requests, slow.requests,
         ("request_id", "prompt_tokens", "output_tokens", "generated_tokens", "status",
          "preemptions", "instances", "slo_met"),
         ("arrival", "first_token_time", "finish_time", "ttft", "tpot", "itl_max", "e2e")),
        (base.instances, slow.instances,
         ("instance_id", "tokens_prefilled", "tokens_generated", "requests_finished", "iterations"),
         ("provision_time", "ready_time", "stop_time", "gpu_seconds", "busy_seconds")),
        (base.events, slow.events, ("kind", "instance_id", "request_id"), ("time",)),
    ]
    for fast_table, slow_table, same, doubled in pairs:
        for column in same:
            assert fast_table[column].equals(slow_table[column]), column
        for column in doubled:
            np.testing.assert_array_equal(k * fast_table[column].to_numpy(),
                                          slow_table[column].to_numpy(), err_msg=column)
    assert slow.manifest["sim_end_s"] == k * base.manifest["sim_end_s"]
