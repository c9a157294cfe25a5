"""Communication curve fitting (chironsim/perf/comm_fit.py): the exact floor that no
non-decreasing curve can beat, and a fit that respects it."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chironsim.perf.comm_fit import decade_errors, decades, fit_curve, monotone_floor

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


def _sizes(per_decade: int = 12, first: float = 2e3, last: float = 5e7) -> np.ndarray:
    return np.geomspace(first, last, per_decade * int(np.log10(last / first) + 1))


def _worst(curve, sizes, seconds) -> float:
    predicted = np.array([curve.time(float(s)) for s in sizes])
    return float(decade_errors(predicted, seconds, decades(sizes)).max())


def test_floor_of_a_non_decreasing_profile_is_zero_and_the_fit_follows_it():
    sizes = _sizes()
    seconds = 20e-6 + sizes / 200e9  # a latency floor, then a 200 GB/s bandwidth regime
    eps, keep = monotone_floor(sizes, seconds)
    assert eps < 1e-6 and keep.any()
    assert _worst(fit_curve(sizes, seconds), sizes, seconds) < 0.02


def test_floor_of_an_inversion_between_two_single_point_decades_is_exact():
    # 2 KB measured at 2x the time of 20 KB: a non-decreasing f with f(2K) <= f(20K) can at best
    # meet both at 1/3 relative error (2(1 - e) = 1(1 + e))
    sizes = np.array([2e3, 2e4])
    seconds = np.array([2e-5, 1e-5])
    eps, keep = monotone_floor(sizes, seconds)
    assert eps == pytest.approx(1 / 3, abs=1e-6)
    assert keep.all()


def test_floor_needs_only_a_majority_of_each_decade():
    # one decade of 5 points alternating between two modes: 3 of 5 on a non-decreasing path
    sizes = np.array([1e4, 2e4, 3e4, 4e4, 5e4])
    seconds = np.array([30e-6, 10e-6, 30e-6, 10e-6, 30e-6])
    eps, keep = monotone_floor(sizes, seconds)
    assert eps < 1e-6
    chosen = seconds[keep]
    assert keep.sum() == 3 and (np.diff(chosen) >= 0).all()


@settings(max_examples=25, deadline=None, derandomize=True)
@given(st.lists(st.floats(min_value=0.5, max_value=2.0), min_size=24, max_size=24))
def test_no_fitted_curve_beats_the_floor_and_its_points_admit_a_non_decreasing_function(noise):
    sizes = _sizes(per_decade=8, first=2e3, last=2e5)
    seconds = (15e-6 + sizes / 100e9) * np.asarray(noise)
    eps, keep = monotone_floor(sizes, seconds)
    assert _worst(fit_curve(sizes, seconds), sizes, seconds) >= eps - 1e-6
    # the floor's points: each decade a majority, and values within eps can be chosen non-decreasing
    decade = decades(sizes)
    for d in np.unique(decade):
        count = int((decade == d).sum())
        assert keep[decade == d].sum() >= (count + 1) // 2
    level = 0.0
    for t in seconds[keep]:
        assert level <= t * (1 + eps) + 1e-15
        level = max(level, t * (1 - eps))


def test_fit_keeps_large_message_decades_tight_when_small_ones_are_noisy():
    sizes = _sizes()
    clean = 20e-6 + sizes / 200e9
    modes = np.where(np.arange(len(sizes)) % 3 == 1, 1.8, 1.0)  # a slow minority mode...
    seconds = np.where(sizes < 1e5, clean * modes, clean)  # ...below 100 KB only
    curve = fit_curve(sizes, seconds)
    predicted = np.array([curve.time(float(s)) for s in sizes])
    errors = decade_errors(predicted, seconds, decades(sizes))
    assert errors[errors.index >= 6].max() < 0.02
    assert errors.max() <= 0.05  # the majority mode is followed
