"""How much work a workload config asks for, known before anything is generated.

Each number of a stream is bounded on its own by the schema; this module bounds what they
make together: a rate of 50,000 arrivals/s is fine for a minute but not for a year, and a
``num_requests`` stream at a tiny rate would run for centuries. It computes, per stream, the
expected number of requests and the expected time its last one arrives, from the arrival
process's mean rate (exact for the piecewise-constant kinds), and reports every stream that
would exceed :data:`~chironsim.limits.MAX_REQUESTS`, :data:`~chironsim.limits.MAX_TIME_S` or
:data:`~chironsim.limits.MAX_PERIODIC_EVENTS` (on/off switches), as ``(key path, problem)``.
Trace streams are sized by their file, which is read later; only their time window is known.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from chironsim.config_base import number_text
from chironsim.limits import MAX_PERIODIC_EVENTS, MAX_REQUESTS, MAX_TIME_S
from chironsim.workload.config import (
    BatchStream,
    DiurnalArrivals,
    GammaArrivals,
    OnOffArrivals,
    PoissonArrivals,
    SpikeArrivals,
    StepArrivals,
    SyntheticStream,
    TraceStream,
    WorkloadConfig,
)

Segment = tuple[float, float, float]  # (start, end, mean rate); end may be inf
Problem = tuple[tuple[str | int, ...], str]
ArrivalSpec = (PoissonArrivals | GammaArrivals | OnOffArrivals | DiurnalArrivals | SpikeArrivals
               | StepArrivals)


@dataclass(frozen=True)
class Extent:
    """What one stream asks for: expected requests and expected end (s), None where unknown."""

    requests: float | None
    end_s: float | None


def mean_rate_segments(arrival: ArrivalSpec) -> list[Segment]:
    """The arrival process's mean rate as consecutive constant pieces from t = 0."""
    if isinstance(arrival, (PoissonArrivals, GammaArrivals)):
        return [(0.0, math.inf, arrival.rate)]
    if isinstance(arrival, OnOffArrivals):
        cycle = arrival.mean_on_s + arrival.mean_off_s
        mean = (arrival.rate_on * arrival.mean_on_s + arrival.rate_off * arrival.mean_off_s) / cycle
        return [(0.0, math.inf, mean)]
    if isinstance(arrival, DiurnalArrivals):
        return [(0.0, math.inf, arrival.mean_rate)]
    if isinstance(arrival, SpikeArrivals):
        end = arrival.start_s + arrival.duration_s
        return [(0.0, arrival.start_s, arrival.base_rate), (arrival.start_s, end, arrival.spike_rate),
                (end, math.inf, arrival.base_rate)]
    ends = [*arrival.times[1:], math.inf]
    return list(zip(arrival.times, ends, arrival.rates))


def expected_arrivals(segments: list[Segment], until: float) -> float:
    """Expected arrivals in [0, until)."""
    total = 0.0
    for start, end, rate in segments:
        if rate > 0 and until > start:
            total += rate * (min(end, until) - start)
    return total


def time_for(segments: list[Segment], count: float) -> float:
    """Expected time of the ``count``-th arrival; where the rate drops to zero for good before
    that many arrived, the time it does (the stream ends there by itself)."""
    last_active = 0.0
    for start, end, rate in segments:
        if rate <= 0:
            continue
        expected = rate * (end - start)
        if expected >= count:
            return start + count / rate
        count -= expected
        last_active = end
    return last_active


def stream_extent(stream: SyntheticStream | BatchStream | TraceStream,
                  duration_s: float | None) -> Extent:
    """Expected requests and end of one stream within the scenario's window ``duration_s``."""
    if isinstance(stream, BatchStream):
        return Extent(stream.num_requests, stream.submit_at + stream.window_s)
    if isinstance(stream, TraceStream):
        if stream.time_window is None:
            return Extent(None, None)
        lo, hi = stream.time_window
        return Extent(None, stream.start + (hi - lo) / stream.rate_scale)
    span = stream.duration_s if stream.duration_s is not None else math.inf
    if duration_s is not None:
        span = min(span, max(0.0, duration_s - stream.start))
    segments = mean_rate_segments(stream.arrival)
    cap = stream.num_requests if stream.num_requests is not None else math.inf
    span = min(span, time_for(segments, cap))
    return Extent(min(cap, expected_arrivals(segments, span)), stream.start + span)


def workload_problems(workload: WorkloadConfig,
                      duration_s: float | None) -> tuple[list[Problem], tuple[float, int] | None]:
    """Streams that ask for too much, and the workload's expected end with the index of the
    stream that ends last (None where a trace's length is known only from its file)."""
    problems: list[Problem] = []
    ends: list[float | None] = []
    total = 0.0
    for i, stream in enumerate(workload.streams):
        key = ("workload", "streams", i)
        extent = stream_extent(stream, duration_s)
        ends.append(extent.end_s)
        total += extent.requests or 0.0
        if not isinstance(stream, SyntheticStream):
            continue
        problems += _synthetic_problems(key, stream, extent)
    if len(workload.streams) > 1 and total > MAX_REQUESTS and not problems:
        problems.append((("workload", "streams"),
                         f"the streams together expect about {number_text(round(total))} requests; "
                         f"at most {number_text(MAX_REQUESTS)} in one scenario"))
    if any(e is None for e in ends):
        return problems, None
    last = max(range(len(ends)), key=lambda i: ends[i] or 0.0)
    return problems, (ends[last] or 0.0, last)


def _synthetic_problems(key: tuple[str | int, ...], stream: SyntheticStream,
                        extent: Extent) -> list[Problem]:
    assert extent.requests is not None and extent.end_s is not None
    span = extent.end_s - stream.start
    problems: list[Problem] = []
    if extent.requests > MAX_REQUESTS:
        problems.append((key, f"expects about {number_text(round(extent.requests))} requests "
                         f"(its arrival rate over {number_text(round(span))} s); at most "
                         f"{number_text(MAX_REQUESTS)} per stream: lower the rate or duration_s, "
                         "or set num_requests"))
    if span > MAX_TIME_S:  # duration_s is bounded by the schema: num_requests set the span
        problems.append((key, f"num_requests {number_text(stream.num_requests or 0)} at its "
                         f"arrival rate take about {span:.3g} s of simulated time; at most "
                         f"{number_text(MAX_TIME_S)} s (a year): raise the rate, lower num_requests "
                         "or set duration_s"))
    arrival = stream.arrival
    if isinstance(arrival, OnOffArrivals) and math.isfinite(span):
        switches = 2 * span / (arrival.mean_on_s + arrival.mean_off_s)
        if switches > MAX_PERIODIC_EVENTS:
            problems.append(((*key, "arrival"),
                             f"on/off periods averaging {arrival.mean_on_s:g} s and "
                             f"{arrival.mean_off_s:g} s over {number_text(round(span))} s are "
                             f"about {switches:.3g} switches; at most "
                             f"{number_text(MAX_PERIODIC_EVENTS)}: lengthen mean_on_s/mean_off_s"))
    return problems
