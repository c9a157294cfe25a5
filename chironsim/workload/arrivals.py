"""Arrival processes, generated lazily in numpy chunks of increasing times (s from 0).

Every generator is infinite unless its rate is zero from some point on; the caller stops it
(duration, request count, horizon). Chunks keep the per-request cost at a few numpy
operations amortised, which matters for week-long synthetic runs.

Piecewise-constant-rate processes (on/off, spike, step) are drawn exactly: on an interval of
length L at rate r the number of arrivals is Poisson(rL) and their positions are sorted
uniforms; long intervals are cut into pieces of about ``CHUNK`` expected arrivals (Poisson
increments are independent, so the cut changes nothing in distribution).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator

import numpy as np

from chironsim.workload.config import (
    DiurnalArrivals,
    GammaArrivals,
    OnOffArrivals,
    PoissonArrivals,
    SpikeArrivals,
    StepArrivals,
)

CHUNK = 4096

Segment = tuple[float, float, float]  # (start, end, rate); end may be inf


def _renewal(gaps: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    clock = 0.0
    for chunk in gaps:
        times = clock + np.cumsum(chunk)
        clock = float(times[-1])
        yield times


def poisson(spec: PoissonArrivals, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Exponential gaps of mean 1/rate; the first arrival is one gap after 0."""
    return _renewal(rng.exponential(1.0 / spec.rate, CHUNK) for _ in itertools.count())


def gamma(spec: GammaArrivals, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Gamma gaps with shape 1/cv² and mean 1/rate."""
    shape = 1.0 / spec.cv**2
    scale = 1.0 / (spec.rate * shape)
    return _renewal(rng.gamma(shape, scale, CHUNK) for _ in itertools.count())


def piecewise_poisson(
    segments: Iterator[Segment], rng: np.random.Generator
) -> Iterator[np.ndarray]:
    """Poisson arrivals with a rate that is constant on each of consecutive segments.

    Stops after a zero-rate segment that never ends.
    """
    for seg_start, seg_end, rate in segments:
        if rate <= 0:
            if math.isinf(seg_end):
                return
            continue
        piece = CHUNK / rate
        clock = seg_start
        while clock < seg_end:
            piece_end = min(clock + piece, seg_end)
            length = piece_end - clock
            count = int(rng.poisson(rate * length))
            if count:
                yield clock + np.sort(rng.uniform(0.0, length, count))
            clock = piece_end


def _onoff_segments(spec: OnOffArrivals, rng: np.random.Generator) -> Iterator[Segment]:
    clock = 0.0
    while True:
        for mean, rate in ((spec.mean_on_s, spec.rate_on), (spec.mean_off_s, spec.rate_off)):
            length = mean if spec.periods == "deterministic" else float(rng.exponential(mean))
            yield clock, clock + length, rate
            clock += length


def onoff(spec: OnOffArrivals, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Markov-modulated (or square-wave) on/off Poisson arrivals, starting in an on period."""
    return piecewise_poisson(_onoff_segments(spec, rng), rng)


def spike(spec: SpikeArrivals, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Base-rate Poisson with one window at the spike rate."""
    end = spec.start_s + spec.duration_s
    segments: list[Segment] = [
        (0.0, spec.start_s, spec.base_rate),
        (spec.start_s, end, spec.spike_rate),
        (end, math.inf, spec.base_rate),
    ]
    return piecewise_poisson(iter(s for s in segments if s[1] > s[0]), rng)


def step(spec: StepArrivals, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Poisson whose rate jumps to ``rates[i]`` at ``times[i]``."""
    ends = [*spec.times[1:], math.inf]
    return piecewise_poisson(iter(zip(spec.times, ends, spec.rates)), rng)


def diurnal(spec: DiurnalArrivals, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Sinusoidal-rate Poisson by thinning (Lewis–Shedler) a Poisson process at the peak rate."""
    peak = spec.mean_rate * (1.0 + spec.amplitude)
    omega = 2.0 * math.pi / spec.period_s
    for candidates in poisson(PoissonArrivals(rate=peak), rng):
        rate = spec.mean_rate * (1.0 + spec.amplitude * np.sin(omega * candidates + spec.phase))
        kept = candidates[rng.uniform(0.0, peak, candidates.size) < rate]
        if kept.size:
            yield kept


def arrival_chunks(
    spec: PoissonArrivals | GammaArrivals | OnOffArrivals | DiurnalArrivals | SpikeArrivals | StepArrivals,
    rng: np.random.Generator,
) -> Iterator[np.ndarray]:
    """Dispatch on the arrival kind; yields sorted arrays of times (s after the stream start)."""
    generators = {
        "poisson": poisson,
        "gamma": gamma,
        "onoff": onoff,
        "diurnal": diurnal,
        "spike": spike,
        "step": step,
    }
    return generators[spec.kind](spec, rng)  # type: ignore[operator]
