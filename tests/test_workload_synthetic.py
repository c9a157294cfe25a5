"""Synthetic arrivals and lengths: statistics within tolerance (fixed seeds), clipping, laziness.

Tolerances are several standard errors of the estimate, so a wrong process (the wrong rate or
CV, an off-by-one period) fails while a correct one passes at these seeds and would pass at
almost any other.
"""

from __future__ import annotations

import itertools
import math
import time
from pathlib import Path

import numpy as np
import pytest

from chironsim.limits import MAX_TIME_S
from chironsim.workload import WorkloadConfig, build_workload

FIXED = {"kind": "fixed", "value": 10}


def generate(arrival: dict, seed: int = 1, **stream: object) -> list:
    spec = {"kind": "synthetic", "arrival": arrival, "prompt_tokens": FIXED, "output_tokens": FIXED}
    spec.update(stream)
    config = WorkloadConfig.model_validate({"streams": [spec]})
    return list(build_workload(config, np.random.SeedSequence(seed), Path(".")))


def times(requests: list) -> np.ndarray:
    return np.array([r.arrival for r in requests])


def test_poisson_rate_and_exponential_gaps() -> None:
    arrivals = times(generate({"kind": "poisson", "rate": 8.0}, num_requests=40_000))
    gaps = np.diff(arrivals)
    assert len(arrivals) / arrivals[-1] == pytest.approx(8.0, rel=5 / math.sqrt(40_000))
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, abs=0.03)


@pytest.mark.parametrize("cv", [0.5, 3.0])
def test_gamma_rate_and_cv(cv: float) -> None:
    arrivals = times(generate({"kind": "gamma", "rate": 4.0, "cv": cv}, seed=7, num_requests=60_000))
    gaps = np.diff(arrivals)
    assert 1 / gaps.mean() == pytest.approx(4.0, rel=5 * cv / math.sqrt(60_000))
    assert gaps.std() / gaps.mean() == pytest.approx(cv, rel=0.06)


def test_duration_num_requests_and_start() -> None:
    by_time = generate({"kind": "poisson", "rate": 50.0}, start=100.0, duration_s=10.0)
    assert 100.0 <= by_time[0].arrival and by_time[-1].arrival < 110.0
    assert len(by_time) == pytest.approx(500, abs=5 * math.sqrt(500))
    by_count = generate({"kind": "poisson", "rate": 50.0}, duration_s=1000.0, num_requests=123)
    assert len(by_count) == 123


def test_onoff_deterministic_periods_switch_rates() -> None:
    arrival = {"kind": "onoff", "rate_on": 40.0, "rate_off": 2.0, "mean_on_s": 3.0,
               "mean_off_s": 7.0, "periods": "deterministic"}
    arrivals = times(generate(arrival, duration_s=2000.0))
    phase = arrivals % 10.0
    on, off = (phase < 3.0).sum(), (phase >= 3.0).sum()
    assert on / (200 * 3.0) == pytest.approx(40.0, rel=5 / math.sqrt(on))
    assert off / (200 * 7.0) == pytest.approx(2.0, rel=5 / math.sqrt(off))


def test_onoff_exponential_periods_mean_rate() -> None:
    arrival = {"kind": "onoff", "rate_on": 20.0, "rate_off": 0.0, "mean_on_s": 2.0, "mean_off_s": 8.0}
    arrivals = times(generate(arrival, seed=3, duration_s=20_000.0))
    # long-run rate = 20 × 2/10 = 4; the count varies with the ~2,000 random on periods
    # (relative std ≈ 1/√2000 ≈ 2.2 %), so allow 10 %
    assert len(arrivals) / 20_000.0 == pytest.approx(4.0, rel=0.10)
    assert (np.diff(arrivals).std() / np.diff(arrivals).mean()) > 1.5  # bursty, unlike Poisson


def test_diurnal_follows_the_sine() -> None:
    period, mean_rate, amplitude = 100.0, 20.0, 0.8
    arrival = {"kind": "diurnal", "mean_rate": mean_rate, "amplitude": amplitude,
               "period_s": period, "phase": math.pi / 2}
    arrivals = times(generate(arrival, seed=5, duration_s=100 * period))
    assert len(arrivals) / (100 * period) == pytest.approx(mean_rate, rel=0.02)
    # with phase π/2 the rate is mean·(1 + A·cos(2πt/P)): peak in the first and last tenth
    counts, _ = np.histogram(arrivals % period, bins=10, range=(0, period))
    edges = np.linspace(0, period, 11)
    expected = [
        100 * mean_rate * (b - a + amplitude * period / (2 * math.pi)
                           * (math.sin(2 * math.pi * b / period) - math.sin(2 * math.pi * a / period)))
        for a, b in zip(edges, edges[1:])
    ]
    for got, want in zip(counts, expected):
        assert got == pytest.approx(want, abs=5 * math.sqrt(want))


def test_spike_and_step_rates() -> None:
    spike = times(generate({"kind": "spike", "base_rate": 2.0, "spike_rate": 50.0, "start_s": 100.0,
                            "duration_s": 20.0}, duration_s=300.0))
    inside = ((spike >= 100) & (spike < 120)).sum()
    assert inside == pytest.approx(1000, abs=5 * math.sqrt(1000))
    assert len(spike) - inside == pytest.approx(560, abs=5 * math.sqrt(560))

    step = times(generate({"kind": "step", "rates": [1.0, 30.0, 0.0, 5.0], "times": [0, 100, 200, 300]},
                          duration_s=400.0))
    counts, _ = np.histogram(step, bins=[0, 100, 200, 300, 400])
    for got, want in zip(counts, [100, 3000, 0, 500]):
        assert got == pytest.approx(want, abs=5 * math.sqrt(max(want, 1)))


def test_a_rate_that_drops_to_zero_for_good_ends_the_stream() -> None:
    step = generate({"kind": "step", "rates": [10.0, 0.0], "times": [0, 5]}, num_requests=10_000_000)
    assert 0 < len(step) < 200 and step[-1].arrival < 5.0


def lengths(prompt: dict, output: dict | None = FIXED, n: int = 20_000, seed: int = 2, **stream: object):
    spec = {"kind": "synthetic", "arrival": {"kind": "poisson", "rate": 1000.0},
            "prompt_tokens": prompt, "num_requests": n, **stream}
    if output is not None:
        spec["output_tokens"] = output
    config = WorkloadConfig.model_validate({"streams": [spec]})
    workload = build_workload(config, np.random.SeedSequence(seed), Path("."))
    requests = list(workload)
    return (np.array([r.prompt_tokens for r in requests]),
            np.array([r.output_tokens for r in requests]), workload.stats[0])


def test_length_distributions() -> None:
    prompt, _, _ = lengths({"kind": "lognormal", "median": 500.0, "sigma": 1.0})
    assert np.median(prompt) == pytest.approx(500, rel=0.04)
    assert np.log(prompt).std() == pytest.approx(1.0, rel=0.03)
    prompt, _, _ = lengths({"kind": "lognormal", "mean": 300.0, "sigma": 0.5})
    assert prompt.mean() == pytest.approx(300, rel=0.02)
    prompt, _, _ = lengths({"kind": "exponential", "mean": 200.0})
    assert prompt.mean() == pytest.approx(200, rel=0.03)
    prompt, _, _ = lengths({"kind": "uniform", "min": 10, "max": 20})
    assert prompt.min() == 10 and prompt.max() == 20 and prompt.mean() == pytest.approx(15, abs=0.1)
    prompt, _, _ = lengths({"kind": "zipf", "a": 1.5, "min": 4, "max": 1000})
    assert prompt.min() == 4 and prompt.max() <= 1000
    ratio = (prompt == 4).sum() / (prompt == 5).sum()
    assert ratio == pytest.approx((5 / 4) ** 1.5, rel=0.1)
    prompt, output, _ = lengths({"kind": "fixed", "value": 7}, {"kind": "fixed", "value": 3}, n=10)
    assert set(prompt) == {7} and set(output) == {3}


def test_clipping_to_one_and_max_is_counted() -> None:
    prompt, output, stats = lengths({"kind": "lognormal", "median": 2.0, "sigma": 2.0},
                                    {"kind": "exponential", "mean": 1000.0},
                                    max_prompt_tokens=50, max_output_tokens=100)
    assert prompt.min() == 1 and prompt.max() == 50 and output.max() == 100
    # lognormal(median 2, σ 2) rounds below 1 when x < 0.5 and exceeds 50 when x > 50.5
    from scipy.stats import norm

    expected = len(prompt) * (norm.cdf(math.log(0.5 / 2) / 2) + norm.sf(math.log(50.5 / 2) / 2))
    assert stats.prompt_clipped == pytest.approx(expected, rel=0.05)
    assert stats.prompt_clipped <= (prompt == 1).sum() + (prompt == 50).sum()
    assert stats.output_clipped == pytest.approx(len(output) * math.exp(-100.5 / 1000), rel=0.02)


def test_empirical_marginal_and_joint(tmp_path: Path) -> None:
    rows = [(10, 1), (20, 2), (30, 3), (40, 4)]
    (tmp_path / "l.csv").write_text("num_prefill_tokens,num_decode_tokens\n"
                                    + "".join(f"{p},{o}\n" for p, o in rows))
    joint = {"kind": "empirical", "path": str(tmp_path / "l.csv"), "format": "splitwise", "joint": True}
    prompt, output, _ = lengths(joint, None, n=4000)
    assert set(zip(prompt.tolist(), output.tolist())) == set(rows)
    for value in (10, 20, 30, 40):
        assert (prompt == value).sum() == pytest.approx(1000, abs=5 * math.sqrt(750))
    marginal = {"kind": "empirical", "path": str(tmp_path / "l.csv"), "format": "splitwise"}
    prompt, output, _ = lengths(marginal, marginal, n=4000)
    assert set(prompt) == {10, 20, 30, 40} and set(output) == {1, 2, 3, 4}
    pairs = set(zip(prompt.tolist(), output.tolist()))
    assert len(pairs) == 16  # independent columns mix rows
    from_output = {**marginal, "column": "output"}
    prompt, _, _ = lengths(from_output, FIXED, n=100)
    assert set(prompt) <= {1, 2, 3, 4}


def test_synthetic_generation_is_lazy_and_fast() -> None:
    # a year at 1,000/s: only laziness makes taking the first 50,000 requests fast
    spec = {"kind": "synthetic", "arrival": {"kind": "poisson", "rate": 1000.0}, "duration_s": MAX_TIME_S,
            "prompt_tokens": FIXED, "output_tokens": FIXED}
    config = WorkloadConfig.model_validate({"streams": [spec]})
    started = time.perf_counter()
    head = list(itertools.islice(build_workload(config, np.random.SeedSequence(0), Path(".")), 50_000))
    assert len(head) == 50_000 and time.perf_counter() - started < 5.0
