"""Degenerate configurations must reproduce queueing theory (DESIGN.md §8, "Analytical").

One instance with ``max_num_seqs: 1`` admits one request at a time in FCFS order and serves it
without interruption (a prefill iteration, then ``output - 1`` decode iterations), so it is a
FIFO single-server queue whose service time S is a deterministic function of the request's
lengths, computed here straight from the perf model. With Poisson arrivals that is an M/G/1
queue, whose mean wait is given by Pollaczek–Khinchine: W_q = λ E[S²] / (2 (1 − ρ)), ρ = λ E[S].

Each comparison has two parts:

* a **sample-path** check, exact up to float rounding: the simulated waits equal Lindley's
  recursion W_{n+1} = max(0, W_n + S_n − (A_{n+1} − A_n)) run on the same arrival times and
  the perf model's service times. It shows the engine really is a FIFO single server with
  those service times, independently of any statistics;
* a **statistical** check: the mean wait over R independent replications (different seeds)
  lies within a 99 % Student-t confidence interval of the P-K value. The first 10 % of each
  replication is discarded (it starts empty, which biases waits low). Seeds are fixed (0..R−1,
  not tuned), so the test is reproducible; the CI half-width is also asserted to be a modest
  fraction of W_q, so the test could catch an error of that size.

Little's law is checked on a general multi-instance batching run as the identity it is over a
finished run, and against the sampled ``timeseries``.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from chironsim.experiments.runner import run
from scenarios import (
    decode_times,
    fixed,
    perf_model,
    prefill_time,
    scenario,
    service_time,
    single_server,
    synthetic,
)

CONFIDENCE = 0.99
WARMUP_FRACTION = 0.1


def t_interval(samples: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Mean and Student-t half-width of the mean of independent replication means."""
    r = len(samples)
    half = stats.t.ppf(0.5 + confidence / 2, r - 1) * samples.std(ddof=1) / np.sqrt(r)
    return float(samples.mean()), float(half)


def lindley_waits(arrivals: np.ndarray, service: np.ndarray) -> np.ndarray:
    """Waiting times in a FIFO single-server queue that starts empty."""
    waits = np.zeros(len(arrivals))
    for n in range(1, len(arrivals)):
        waits[n] = max(0.0, waits[n - 1] + service[n - 1] - (arrivals[n] - arrivals[n - 1]))
    return waits


def steady_mean(values: np.ndarray) -> float:
    return float(values[int(WARMUP_FRACTION * len(values)):].mean())


# --- M/D/1 --------------------------------------------------------------------------------

MD1_PROMPT, MD1_OUTPUT = 128, 64
MD1_RHO = 0.6
MD1_REQUESTS, MD1_REPLICATIONS = 1500, 8


@pytest.fixture(scope="module")
def md1():
    """R replications of an M/D/1 queue at ρ = 0.6."""
    perf = perf_model()
    s = service_time(perf, MD1_PROMPT, MD1_OUTPUT)
    lam = MD1_RHO / s
    results = []
    for seed in range(MD1_REPLICATIONS):
        stream = synthetic({"kind": "poisson", "rate": lam}, fixed(MD1_PROMPT), fixed(MD1_OUTPUT),
                           num_requests=MD1_REQUESTS)
        results.append(run(single_server([stream], seed=seed)).requests)
    return perf, s, lam, results


def test_md1_sample_path_is_lindley(md1):
    perf, s, _, results = md1
    pre = prefill_time(perf, MD1_PROMPT)
    for req in results:
        assert (req.status == "finished").all()
        assert np.allclose(req.e2e - req.ttft, s - pre, rtol=0, atol=1e-9), \
            "a lone-server request's service after its first token must be the decode iterations"
        expected = lindley_waits(req.arrival.to_numpy(), np.full(len(req), s))
        simulated = (req.ttft - pre).to_numpy()
        worst = np.abs(simulated - expected).max()
        assert worst < 1e-8, f"simulated waits differ from Lindley's recursion by up to {worst:.3g} s"
        # queue_s (arrival to first admission) is that same wait, measured directly.
        worst = np.abs(req.queue_s.to_numpy() - expected).max()
        assert worst < 1e-8, f"queue_s differs from Lindley's recursion by up to {worst:.3g} s"


def test_md1_mean_wait_matches_pollaczek_khinchine(md1):
    perf, s, lam, results = md1
    pre = prefill_time(perf, MD1_PROMPT)
    rho = lam * s
    theory_wait = lam * s**2 / (2 * (1 - rho))  # P-K with E[S²] = S²
    assert_waits_match(results, pre, theory_wait, s, max_relative_half_width=0.15,
                       label=f"M/D/1 rho={rho:.3f} S={s:.6f}s lambda={lam:.4f}/s "
                             f"R={MD1_REPLICATIONS}x{MD1_REQUESTS}")


def assert_waits_match(results, prefill: float, theory_wait: float, mean_service: float,
                       max_relative_half_width: float, label: str, note: str = "") -> None:
    """Mean queueing wait (TTFT minus the bare prefill) and mean sojourn over replications
    must contain the theoretical values in their confidence intervals, and the interval must
    be narrow enough for that to mean something."""
    waits = np.array([steady_mean((r.ttft - prefill).to_numpy()) for r in results])
    sojourns = np.array([steady_mean(r.e2e.to_numpy()) for r in results])
    mean_w, half_w = t_interval(waits)
    mean_t, half_t = t_interval(sojourns)
    theory_sojourn = theory_wait + mean_service
    print(f"\n{label}: Wq sim {mean_w:.5f} ± {half_w:.5f} ({CONFIDENCE:.0%}) vs P-K "
          f"{theory_wait:.5f}{note}; sojourn sim {mean_t:.5f} ± {half_t:.5f} vs {theory_sojourn:.5f}")
    assert half_w < max_relative_half_width * theory_wait, \
        f"CI half-width {half_w:.4g} too wide to be meaningful"
    assert abs(mean_w - theory_wait) <= half_w, \
        f"{label}: mean wait {mean_w:.5f} ± {half_w:.5f} excludes P-K {theory_wait:.5f}"
    assert abs(mean_t - theory_sojourn) <= half_t, \
        f"{label}: mean sojourn {mean_t:.5f} ± {half_t:.5f} excludes {theory_sojourn:.5f}"


# --- M/M/1 (M/G/1 with near-exponential service) -------------------------------------------

MM1_PROMPT = 1
MM1_MEAN_OUTPUT = 100.0
MM1_MAX_OUTPUT = 1500
MM1_RHO = 0.5
MM1_REQUESTS, MM1_REPLICATIONS = 2000, 8


def mm1_service_table(perf) -> tuple[np.ndarray, np.ndarray]:
    """Service time S(k) for k = 1..max output tokens, and the exact pmf of k.

    Output lengths are round(Exp(mean)) clipped to [1, max] (``ExponentialLength`` plus the
    stream's clip), so P(k) = P(k − ½ ≤ X < k + ½) with the clipped tails folded into k = 1
    and k = max.
    """
    k = np.arange(1, MM1_MAX_OUTPUT + 1)
    s = prefill_time(perf, MM1_PROMPT) + np.concatenate(
        ([0.0], np.cumsum(decode_times(perf, MM1_PROMPT, MM1_MAX_OUTPUT))))
    lo = np.where(k == 1, 0.0, k - 0.5)
    hi = np.where(k == MM1_MAX_OUTPUT, np.inf, k + 0.5)
    pmf = np.exp(-lo / MM1_MEAN_OUTPUT) - np.exp(-hi / MM1_MEAN_OUTPUT)
    return s, pmf


@pytest.fixture(scope="module")
def mm1():
    perf = perf_model()
    s_of_k, pmf = mm1_service_table(perf)
    mean_s = float(pmf @ s_of_k)
    lam = MM1_RHO / mean_s
    results = []
    for seed in range(MM1_REPLICATIONS):
        stream = synthetic({"kind": "poisson", "rate": lam}, fixed(MM1_PROMPT),
                           {"kind": "exponential", "mean": MM1_MEAN_OUTPUT},
                           num_requests=MM1_REQUESTS, max_output_tokens=MM1_MAX_OUTPUT)
        results.append(run(single_server([stream], seed=seed)).requests)
    return perf, s_of_k, pmf, lam, results


def test_mm1_sample_path_is_lindley(mm1):
    perf, s_of_k, _, _, results = mm1
    pre = prefill_time(perf, MM1_PROMPT)
    for req in results:
        assert (req.status == "finished").all()
        service = s_of_k[req.output_tokens.to_numpy() - 1]
        assert np.allclose(req.e2e - req.ttft, service - pre, rtol=1e-12, atol=1e-9)
        expected = lindley_waits(req.arrival.to_numpy(), service)
        worst = np.abs((req.ttft - pre).to_numpy() - expected).max()
        assert worst < 1e-8, f"simulated waits differ from Lindley's recursion by up to {worst:.3g} s"


def test_mm1_mean_wait_matches_pollaczek_khinchine(mm1):
    """Near-exponential service: S(k) = prefill + Σ_{j<k} decode(context 1 + j), k output tokens.

    What is exponential and what is not: k is round(Exp(100)) clipped to [1, 1500], a
    discretised exponential (SCV ≈ 1.00), and each decode iteration costs nearly the same
    (weights dominate; the KV read grows with context by < 1 % over the range), so S ≈ a + b·k
    is close to, but not exactly, exponential. The assertion therefore uses the M/G/1 P-K value
    with the exact first and second moments of S under that length distribution; the plain
    M/M/1 value ρ/(μ − λ) with μ = 1/E[S] is printed for comparison only.
    """
    perf, s_of_k, pmf, lam, results = mm1
    pre = prefill_time(perf, MM1_PROMPT)
    mean_s = float(pmf @ s_of_k)
    second_s = float(pmf @ s_of_k**2)
    rho = lam * mean_s
    pk_wait = lam * second_s / (2 * (1 - rho))
    mm1_wait = rho * mean_s / (1 - rho)
    assert_waits_match(results, pre, pk_wait, mean_s, max_relative_half_width=0.2,
                       label=f"M/M/1-like rho={rho:.3f} E[S]={mean_s:.5f}s "
                             f"SCV={second_s / mean_s**2 - 1:.4f} R={MM1_REPLICATIONS}x{MM1_REQUESTS}",
                       note=f" (plain M/M/1 {mm1_wait:.5f})")


# --- Little's law ---------------------------------------------------------------------------

LITTLE_SAMPLE_S = 0.25


@pytest.fixture(scope="module")
def little_run():
    """Three batching instances under bursty gamma arrivals; every request finishes."""
    stream = synthetic({"kind": "gamma", "rate": 12.0, "cv": 2.0},
                       {"kind": "lognormal", "median": 400, "sigma": 0.8},
                       {"kind": "lognormal", "median": 120, "sigma": 0.8},
                       duration_s=90.0, max_prompt_tokens=4000, max_output_tokens=1000)
    cfg = scenario([stream], seed=7, instances=3, engine={"max_num_seqs": 16},
                   sample_interval_s=LITTLE_SAMPLE_S)
    return run(cfg)


def number_in_system(arrivals: np.ndarray, departures: np.ndarray):
    """The step function N(t): change times and the value after each."""
    times = np.concatenate([arrivals, departures])
    steps = np.concatenate([np.ones(len(arrivals)), -np.ones(len(departures))])
    order = np.lexsort((steps, times))  # at a tie, count the departure first
    return times[order], np.cumsum(steps[order])


def test_littles_law_identity(little_run):
    req = little_run.requests
    assert (req.status == "finished").all() and len(req) > 500
    assert (req.finish_time >= req.arrival).all()
    end = float(little_run.manifest["sim_end_s"])
    assert req.finish_time.max() <= end
    times, counts = number_in_system(req.arrival.to_numpy(), req.finish_time.to_numpy())
    assert counts[-1] == 0 and counts.min() >= 0
    area = float(np.sum(counts[:-1] * np.diff(times)))  # ∫ N(t) dt over [0, end]
    mean_in_system = area / end
    lam = len(req) / end
    mean_sojourn = float(req.e2e.mean())
    print(f"\nLittle: L={mean_in_system:.6f} lambda*W={lam * mean_sojourn:.6f} "
          f"(lambda={lam:.4f}/s, W={mean_sojourn:.4f}s, T={end:.2f}s)")
    assert mean_in_system == pytest.approx(lam * mean_sojourn, rel=1e-9)
    # Batching really happened (tokens per iteration well above 1), or this would only
    # restate the single-server tests.
    inst = little_run.instances
    assert inst.tokens_generated.sum() / inst.iterations.sum() > 3


def test_littles_law_against_timeseries(little_run):
    """The sampled running + waiting must be N(t) at each sample time, so its average ≈ L."""
    req = little_run.requests
    ts = little_run.timeseries
    end = float(little_run.manifest["sim_end_s"])
    sampled = ts[ts.time < end]
    arrivals, departures = req.arrival.to_numpy(), req.finish_time.to_numpy()
    times = sampled.time.to_numpy()
    in_system = ((arrivals[None, :] <= times[:, None]) & (departures[None, :] > times[:, None])).sum(1)
    reported = (sampled.running + sampled.waiting).to_numpy()
    mismatched = np.flatnonzero(in_system != reported)
    assert len(mismatched) == 0, (
        f"{len(mismatched)} samples disagree with N(t) from the requests table, first at "
        f"t={times[mismatched[0]]}: timeseries {reported[mismatched[0]]}, requests "
        f"{in_system[mismatched[0]]}")
    lam_w = len(req) / end * float(req.e2e.mean())
    print(f"\nLittle vs timeseries: sampled mean {reported.mean():.4f} vs lambda*W {lam_w:.4f}")
    assert reported.mean() == pytest.approx(lam_w, rel=0.05)
