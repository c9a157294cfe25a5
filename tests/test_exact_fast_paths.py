"""Exact fast paths of issue 12 (docs/performance.md, "Per-iteration cost"): each must give
the bits of the general path it replaces."""

from __future__ import annotations

import numpy as np
import pytest

from chironsim.catalog import list_gpus, list_models
from chironsim.metrics.histogram import ItlRecorder
from chironsim.perf.overhead import EngineOverhead
from chironsim.perf.roofline import IterationTimeModel

OVERHEADS = (None, EngineOverhead(constant_s=0.002, per_sequence_s=1e-5, launch_per_layer_s=3e-6))


@pytest.mark.parametrize("overhead", OVERHEADS)
def test_decode_stretch_time_is_iteration_time_on_the_contexts(overhead):
    rng = np.random.default_rng(12)
    for model in list_models():
        for gpu in list_gpus():
            for tp in (1, 2):
                try:
                    timer = IterationTimeModel(model, gpu, tp, overhead=overhead)
                except Exception:  # a model that does not split over tp
                    continue
                assert timer._decode_memory_bound, (model.name, gpu.name, tp)
                for _ in range(4):
                    ds, k, c0 = int(rng.integers(1, 600)), int(rng.integers(2, 2049)), int(rng.integers(0, 10**7))
                    fast = timer.decode_stretch_time(ds, c0, k)
                    general = np.asarray(timer.iteration_time(0, 0.0, ds, np.arange(c0, c0 + ds * k, ds)),
                                         dtype=float)
                    assert fast.dtype == general.dtype and fast.tobytes() == general.tobytes()


def _flushed(pending):
    rec = ItlRecorder()
    rec.pending = list(pending)
    rec.flush()
    return {c: (h.counts, repr(h.minimum), repr(h.maximum)) for c, h in rec._hists.items()}


def _one_by_one(pending):
    rec = ItlRecorder()
    for classes, durations, k in pending:
        for cls, n in classes:
            rec.histogram(cls)
            for value in durations[:k].tolist():
                if n:
                    rec.gap(cls, value, n)
    return {c: (h.counts, repr(h.minimum), repr(h.maximum)) for c, h in rec._hists.items()}


def test_itl_flush_counts_each_gap():
    """Pushes counted whole (sorted, one bucket) or per gap: the histograms of adding every gap."""
    rng = np.random.default_rng(3)
    for trial in range(300):
        pending = []
        for _ in range(int(rng.integers(1, 30))):
            n = int(rng.integers(1, 200))
            kind = trial % 4
            if kind == 0:
                d = np.sort(rng.uniform(0.01, 0.03, n))
            elif kind == 1:
                d = rng.uniform(0.01, 0.03, n)
            elif kind == 2:
                d = np.full(n, 0.02)
            else:
                d = np.sort(rng.lognormal(-4, 0.002, n))
            classes = tuple((c, int(rng.integers(0, 3)))
                            for c in rng.choice(["a", "b"], int(rng.integers(1, 3)), replace=False))
            pending.append((classes, d, int(rng.integers(1, n + 1))))
        assert _flushed(pending) == _one_by_one(pending)
