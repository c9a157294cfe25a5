"""Per-token inter-token latency (ITL) histograms, TTFT P99.9 and queueing time (issue 10
item 3): the histogram's error bound against exact percentiles, ITL of a crafted run against
the perf model's decode iterations, and the histograms against every gap collected one by one.
queue_s against Lindley's recursion is in test_analytical; fast-forward identity of the new
columns in test_determinism and test_fusion; gap counts in test_conservation's invariants."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from chironsim.experiments.runner import run
from chironsim.metrics import histogram as histogram_module
from chironsim.metrics.histogram import DEFAULT_ALPHA, ItlRecorder, LogHistogram, merged
from chironsim.metrics.summary import SUMMARY_ADDED, SUMMARY_SCHEMA
from chironsim.metrics.tables import REQUESTS_SCHEMA, conform
from chironsim.sim import world as world_module
from scenarios import decode_times, fixed, perf_model, scenario, single_server, synthetic

QUANTILES = (0.0, 0.001, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 0.999, 0.9999, 1.0)


def samples():
    rng = np.random.default_rng(7)
    yield "lognormal", rng.lognormal(-4.0, 1.0, 50_000)
    yield "exponential", rng.exponential(0.02, 1_001)
    yield "pareto", 0.005 * (1 + rng.pareto(1.2, 20_000))
    yield "two modes", np.concatenate([rng.normal(0.01, 1e-4, 9_990), np.full(10, 3.0)])
    yield "constant", np.full(17, 0.0123)
    yield "one", np.array([0.042])
    yield "tiny and huge", np.array([1e-12, 1e-6, 1.0, 1e5, 3e7])


@pytest.mark.parametrize("alpha", [DEFAULT_ALPHA, 0.05])
def test_quantiles_within_alpha_of_exact_lower_percentile(alpha):
    for name, values in samples():
        one_by_one, bulk = LogHistogram(alpha), LogHistogram(alpha)
        for v in values:
            one_by_one.add(float(v))
        bulk.add_array(values)
        assert one_by_one.counts == bulk.counts, f"{name}: scalar and array buckets differ"
        for q in QUANTILES:
            exact = float(np.percentile(values, 100 * q, method="lower"))
            got = bulk.quantile(q)
            if exact < histogram_module.LOW:  # below the grid: reported as the exact minimum
                assert got == bulk.minimum
                continue
            assert abs(got - exact) <= alpha * exact * (1 + 1e-9), (name, q, got, exact)
        assert bulk.quantile(0) == values.min() and bulk.quantile(1) == values.max() \
            or len({*values.tolist()}) > 1


def test_bucket_boundaries_are_the_worst_case_and_still_within_alpha():
    h = LogHistogram()
    g = h.grid
    for i in (300, 1000, 1500):
        upper = g.bounds[i]
        lower = math.nextafter(g.bounds[i - 1], math.inf)
        for x in (upper, lower):
            assert h.key(x) == i
            assert abs(g.values[i] - x) <= DEFAULT_ALPHA * x * (1 + 1e-12)


def test_merge_is_the_histogram_of_the_union():
    parts = [v for _, v in samples()][:4]
    hists = []
    for v in parts:
        h = LogHistogram()
        h.add_array(v)
        hists.append(h)
    union = LogHistogram()
    union.add_array(np.concatenate(parts))
    m = merged(hists)
    assert m.counts == union.counts and (m.minimum, m.maximum) == (union.minimum, union.maximum)
    assert LogHistogram.from_dict(m.to_dict()).counts == m.counts
    with pytest.raises(ValueError):
        LogHistogram(0.01).merge(LogHistogram(0.02))
    assert math.isnan(LogHistogram().quantile(0.5))


def test_recorder_weights_a_stretch_like_its_iterations_one_by_one():
    durations = np.array([0.01, 0.0101, 0.0102, 0.0101, 0.5, 7.0])
    classes = (("a", 3), ("b", 1))
    bulk, stepped, scalar = ItlRecorder(), ItlRecorder(), LogHistogram()
    bulk.push(classes, durations, 5)  # a stretch cut to its first 5 iterations
    bulk.push((("b", 2),), durations[5:], 1)
    for d in durations[:5]:
        stepped.push(classes, np.array([d]), 1)
        scalar.add(float(d), 3)
    stepped.push((("b", 2),), np.array([7.0]), 1)
    for cls in ("a", "b"):
        assert bulk.by_class[cls].counts == stepped.by_class[cls].counts
    assert bulk.by_class["a"].counts == scalar.counts
    assert (scalar.minimum, scalar.maximum) == (bulk.by_class["a"].minimum, bulk.by_class["a"].maximum)
    assert bulk.by_class["a"].count == 15 and bulk.by_class["b"].count == 7
    assert bulk.by_class["b"].maximum == 7.0 and bulk.by_class["a"].maximum == 0.5


PROMPT, OUTPUT = 512, 200


def test_single_request_itl_is_the_decode_iteration_times():
    """One request alone: its gaps are exactly the perf model's decode iterations."""
    perf = perf_model()
    cfg = single_server([synthetic({"kind": "poisson", "rate": 1.0}, fixed(PROMPT), fixed(OUTPUT),
                                   num_requests=1)])
    res = run(cfg)
    expected = decode_times(perf, PROMPT, OUTPUT)
    assert len(expected) == OUTPUT - 1
    hist = LogHistogram.from_dict(res.manifest["itl_histograms"]["default"])
    assert hist.count == OUTPUT - 1
    assert hist.minimum == pytest.approx(expected.min(), rel=1e-12)
    assert hist.maximum == pytest.approx(expected.max(), rel=1e-12)
    row = res.summary.set_index("request_class").loc["default"]
    for col, q in (("itl_p50", 50), ("itl_p90", 90), ("itl_p99", 99), ("itl_p999", 99.9)):
        exact = np.percentile(expected, q, method="lower")
        assert abs(row[col] - exact) <= DEFAULT_ALPHA * exact, col
    assert row.queue_p50 == row.queue_p99 == 0.0  # nothing ahead of it
    assert row.ttft_p999 == row.ttft_p50


class CollectingRecorder(ItlRecorder):
    """Also keeps every gap, one value per token (only for tests)."""

    def __init__(self):
        super().__init__()
        self.every: dict[str, list[float]] = {}
        self.taken: dict[str, list[float]] = {}

    def _keep(self, cls, value, weight):
        if weight > 0:
            self.every.setdefault(cls, []).extend([value] * weight)
        else:  # a correction may come before the queued gap it takes back
            self.taken.setdefault(cls, []).extend([value] * -weight)

    def gaps(self, cls):
        self.flush()
        kept = list(self.every.get(cls, []))
        for value in self.taken.get(cls, []):
            kept.remove(value)
        return kept

    def flush(self):  # the engine queues pushes itself; every queued gap passes here
        for classes, durations, k in self.pending:
            for d in durations[:k].tolist():
                for cls, n in classes:
                    self._keep(cls, d, n)
        super().flush()

    def gap(self, request_class, gap, weight=1):
        super().gap(request_class, gap, weight)
        self._keep(request_class, gap, weight)


@pytest.mark.parametrize("mode", ["recompute", "swap"])
def test_summary_itl_matches_every_gap_collected(mode, monkeypatch):
    """A preempting two-class run: the summary's ITL percentiles are within alpha of the
    exact percentiles of every gap, collected one by one."""
    recorders = []

    def make():
        recorders.append(CollectingRecorder())
        return recorders[-1]

    monkeypatch.setattr(world_module, "ItlRecorder", make)
    streams = [synthetic({"kind": "poisson", "rate": 6.0},
                         {"kind": "lognormal", "median": 300, "sigma": 0.7},
                         {"kind": "lognormal", "median": 200, "sigma": 0.8},
                         duration_s=20.0, request_class=cls, max_prompt_tokens=1500,
                         max_output_tokens=800) for cls in ("chat", "batch")]
    cfg = scenario(streams, seed=3, instances=2,
                   engine={"gpu_memory_utilization": 0.2, "max_num_seqs": 32,
                           "preemption_mode": mode},
                   policy={"kind": "static", "router": {"kind": "round_robin"}})
    cfg["classes"] = {"chat": {"priority": 0}, "batch": {"priority": 1}}
    res = run(cfg)
    assert res.requests.preemptions.sum() > 5, "the scenario must exercise preemption"
    every = {cls: recorders[0].gaps(cls) for cls in ("chat", "batch")}
    summary = res.summary.set_index("request_class")
    for cls in ("chat", "batch", "all"):
        gaps = np.array(sum(every.values(), []) if cls == "all" else every[cls])
        rows = res.requests if cls == "all" else res.requests[res.requests.request_class == cls]
        assert len(gaps) == int((rows.generated_tokens - 1).clip(lower=0).sum())
        for col, q in (("itl_p50", 50), ("itl_p90", 90), ("itl_p99", 99), ("itl_p999", 99.9)):
            exact = np.percentile(gaps, q, method="lower")
            assert abs(summary.loc[cls, col] - exact) <= DEFAULT_ALPHA * exact, (cls, col)
        done = rows[rows.status == "finished"]
        assert summary.loc[cls, "ttft_p999"] == np.percentile(done.ttft, 99.9)
        assert summary.loc[cls, "queue_p99"] == np.percentile(done.queue_s, 99)


def test_new_columns_are_last_and_older_tables_still_read():
    names = [n for n, _ in SUMMARY_SCHEMA]
    assert names[-len(SUMMARY_ADDED):] == list(SUMMARY_ADDED)
    assert [n for n, _ in REQUESTS_SCHEMA][-1] == "queue_s"
    res = run(single_server([synthetic({"kind": "poisson", "rate": 2.0}, fixed(64), fixed(8),
                                       num_requests=5)]))
    older = conform(res.summary.drop(columns=list(SUMMARY_ADDED)), SUMMARY_SCHEMA, "summary")
    assert older[list(SUMMARY_ADDED)].isna().all().all()
    pd.testing.assert_frame_equal(older.drop(columns=list(SUMMARY_ADDED)),
                                  res.summary.drop(columns=list(SUMMARY_ADDED)))
    requests = conform(res.requests.drop(columns=["queue_s"]), REQUESTS_SCHEMA, "requests")
    assert requests.queue_s.isna().all()
