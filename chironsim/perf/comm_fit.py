"""Fit communication curves (chironsim/perf/comm.py) to measured NCCL timings, and bound how
well any such curve can fit them.

A curve is continuous and non-decreasing in message size, with knots at quarter decades; its
knot times are fitted by linear programming to minimise the absolute relative error with each
size decade weighted equally (`lp_curve`).

Small-message timings in Vidur's profiles are noisy in a way no non-decreasing curve can
follow: at 8 GPUs on one node the medians of neighbouring sizes jump between two modes
(e.g. 20 and 37 us on H100), and the first size of a sweep (2 KB) sometimes takes 2-4x as
long as the next one (10 KB). `monotone_floor` computes, exactly, the smallest worst-decade
median error that *any* non-decreasing function of size can reach on a profile -- the floor
set by the data, not by the model form -- and the points such a best function passes within
it. The fit tries three candidates and keeps the one with the lowest worst-decade median
error: the plain LP fit; trimmed refits that follow the majority mode of each decade; and
the LP fitted to the floor's points only (it follows whichever mode keeps every decade's
median lowest). The calibration report prints the floor beside the fitted curve's error, so
a decade that misses a target says whether the model or the measurement is to blame.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.optimize import linprog

from chironsim.catalog import GPU
from chironsim.errors import ChironError
from chironsim.perf.comm import ALL_REDUCE, CommCurve, CommModel

_US = 1e-6  # knot times are solved for in microseconds for a well-conditioned problem
KNOT_GRIDS = (4, 8, 16)  # knots per decade tried by fit_curve, coarsest first
_SIMPLER_WITHIN = 0.005  # sums of decade errors within 0.5 points of the lowest count as equal
_TRIM_KEEP = 0.6  # a trimmed refit keeps the best-fitting 60 % of each decade
_FLOOR_SLACK = (1.01, 1.1, 1.25, 1.5)
_FLOOR_BISECTIONS = 30  # relative precision of the floor: 2**-30


def decades(sizes: np.ndarray) -> np.ndarray:
    """Size decade of each message: K for 10**K <= bytes < 10**(K+1)."""
    return np.floor(np.log10(sizes))


def knots(sizes: np.ndarray, per_decade: int) -> np.ndarray:
    """Knot sizes: the smallest and largest measured size and every 1/per_decade decade between."""
    lo, hi = float(sizes.min()), float(sizes.max())
    step = 1.0 / per_decade
    inner = 10 ** np.arange(np.ceil(np.log10(lo) / step) * step, np.log10(hi), step)
    return np.unique(np.r_[lo, inner[inner > lo * 1.01], hi])


def basis(knot_sizes: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Rows: the linear-interpolation weights of each size on the knots (flat below the first)."""
    k = np.clip(np.searchsorted(knot_sizes, sizes, side="right") - 1, 0, len(knot_sizes) - 2)
    frac = np.clip((sizes - knot_sizes[k]) / (knot_sizes[k + 1] - knot_sizes[k]), 0.0, None)
    out = np.zeros((len(sizes), len(knot_sizes)))
    rows = np.arange(len(sizes))
    out[rows, k] = 1.0 - frac
    out[rows, k + 1] += frac
    return out


def lp_curve(knot_sizes: np.ndarray, sizes: np.ndarray, seconds: np.ndarray, weights: np.ndarray,
             within: np.ndarray | None = None, tolerance: float = 0.0) -> np.ndarray | None:
    """Knot times (seconds, non-decreasing) minimising sum(w |pred/measured - 1|): a linear
    program. With ``within`` (a mask of points) every such point must also satisfy
    |pred/measured - 1| <= ``tolerance``; None if no curve on these knots can."""
    n, m = len(knot_sizes), len(sizes)
    scaled = sparse.csr_matrix(basis(knot_sizes, sizes) / seconds[:, None] * _US)
    eye = sparse.eye(m)
    steps = sparse.csr_matrix((np.r_[np.ones(n - 1), -np.ones(n - 1)],
                               (np.r_[np.arange(n - 1), np.arange(n - 1)], np.r_[np.arange(n - 1), np.arange(1, n)])),
                              shape=(n - 1, n))
    rows = [sparse.hstack([scaled, -eye]), sparse.hstack([-scaled, -eye]),
            sparse.hstack([steps, sparse.csr_matrix((n - 1, m))])]
    bounds = [np.ones(m), -np.ones(m), np.zeros(n - 1)]
    if within is not None:
        bound = scaled[np.flatnonzero(within)]
        rows += [sparse.hstack([bound, sparse.csr_matrix((bound.shape[0], m))]),
                 sparse.hstack([-bound, sparse.csr_matrix((bound.shape[0], m))])]
        bounds += [np.full(bound.shape[0], 1.0 + tolerance), np.full(bound.shape[0], tolerance - 1.0)]
    result = linprog(np.r_[np.zeros(n), weights], A_ub=sparse.vstack(rows), b_ub=np.concatenate(bounds),
                     bounds=[(0.1, None)] * n + [(0.0, None)] * m, method="highs")
    if result.status == 2 and within is not None:  # infeasible: the knots cannot follow the floor
        return None
    if not result.success:
        raise ChironError(f"communication fit failed: {result.message}")
    return np.maximum.accumulate(result.x[:n]) * _US


def decade_errors(predicted: np.ndarray, measured: np.ndarray, decade: np.ndarray) -> pd.Series:
    """Median absolute relative error per size decade."""
    return pd.Series(np.abs(predicted / measured - 1.0)).groupby(decade).median()


def _majority(count: int) -> int:
    """Points that must lie within e of a curve for a decade's median error to be <= e: all
    but the larger half, ceil(n/2). Exactly so for an odd n; for an even n the median is the
    mean of the two middle errors, so ceil(n/2) is necessary, not sufficient, and the floor is
    a lower bound."""
    return (count + 1) // 2


def _decade_chain(seconds: np.ndarray, eps: float, level: float, need: int) -> tuple[float, np.ndarray | None]:
    """Within one decade (sizes in order), the lowest level at which a non-decreasing function
    starting at >= ``level`` can end after passing within ``eps`` of at least ``need`` points,
    and which points those are (None if it cannot).

    dp[k] = the lowest last value of a non-decreasing choice of k points so far, each value in
    its point's band [t(1 - eps), t(1 + eps)]; a point extends a choice whose last value is
    within its band's top. This is the patience form of a longest-chain search, O(n^2)."""
    lo, hi = seconds * (1.0 - eps), seconds * (1.0 + eps)
    n = len(seconds)
    dp = np.full(n + 1, np.inf)
    dp[0] = level
    history = np.empty((n + 1, n + 1))
    history[0] = dp
    for i in range(n):
        extended = np.where(dp[:-1] <= hi[i], np.maximum(dp[:-1], lo[i]), np.inf)
        dp[1:] = np.minimum(dp[1:], extended)
        history[i + 1] = dp
    k = need + int(np.argmin(dp[need:]))
    end = dp[k]
    if not np.isfinite(end):
        return end, None
    chosen = np.zeros(n, dtype=bool)
    for i in range(n - 1, -1, -1):  # walk back: point i chose slot k if it lowered it
        if k == 0:
            break
        if history[i + 1][k] < history[i][k]:
            chosen[i] = True
            k -= 1
    return end, chosen


def _chain(sizes: np.ndarray, seconds: np.ndarray, eps: float) -> np.ndarray | None:
    """Points a non-decreasing function can pass within ``eps`` of, a majority of every decade
    (None if no such function exists). Decades are taken in order, each ending as low as it can,
    which never hurts the next one."""
    decade = decades(sizes)
    keep = np.zeros(len(sizes), dtype=bool)
    level = 0.0
    for d in np.unique(decade):
        idx = np.flatnonzero(decade == d)
        level, chosen = _decade_chain(seconds[idx], eps, level, _majority(len(idx)))
        if chosen is None:
            return None
        keep[idx[chosen]] = True
    return keep


def monotone_floor(sizes: np.ndarray, seconds: np.ndarray) -> tuple[float, np.ndarray]:
    """The smallest e such that some non-decreasing function of size passes within relative
    error e of at least half the points of every size decade (sizes increasing), by bisection
    on e; and those points. No non-decreasing curve has a lower worst-decade median error:
    the floor is exact for decades of an odd number of points and a lower bound otherwise."""
    lo, hi = 0.0, 1.0
    best = _chain(sizes, seconds, hi)
    while best is None:  # errors above 100 %: widen the bracket
        lo, hi = hi, 2 * hi
        best = _chain(sizes, seconds, hi)
    for _ in range(_FLOOR_BISECTIONS):
        mid = 0.5 * (lo + hi)
        keep = _chain(sizes, seconds, mid)
        if keep is None:
            lo = mid
        else:
            hi, best = mid, keep
    return hi, best


def _candidates(knot_sizes: np.ndarray, sizes: np.ndarray, seconds: np.ndarray,
                floor: tuple[float, np.ndarray]) -> list[np.ndarray]:
    """Knot times of: the L1 fit to every point, trimmed L1 refits to each decade's
    best-fitting majority, and the L1 fit to every point with the floor's points held within
    the floor (times the first slack of _FLOOR_SLACK the knots can meet), so that every
    decade's median can come down to the floor."""
    decade = decades(sizes)
    counts = pd.Series(decade).map(pd.Series(decade).value_counts()).to_numpy(dtype=float)
    weights = 1.0 / counts
    at_points = basis(knot_sizes, sizes)
    candidate = lp_curve(knot_sizes, sizes, seconds, weights)
    found = [candidate]
    keep = np.ones(len(sizes), dtype=bool)
    for _ in range(3):  # trimmed refits: follow the majority mode of bimodal timings
        err = np.abs(at_points @ candidate / seconds - 1.0)
        keep[:] = False
        for d in np.unique(decade):
            idx = np.flatnonzero(decade == d)
            keep[idx[np.argsort(err[idx])[: max(1, int(np.ceil(_TRIM_KEEP * len(idx))))]]] = True
        candidate = lp_curve(knot_sizes, sizes[keep], seconds[keep], weights[keep])
        found.append(candidate)
    eps, on_floor = floor
    for slack in _FLOOR_SLACK:  # the loosest hold these knots can meet
        held = lp_curve(knot_sizes, sizes, seconds, weights, within=on_floor, tolerance=eps * slack + 1e-4)
        if held is not None:
            found.append(held)
            break
    return found


def fit_curve(sizes: np.ndarray, seconds: np.ndarray,
              floor: tuple[float, np.ndarray] | None = None) -> CommCurve:
    """Among the candidates (`_candidates`) on knot grids of 4, 8 and 16 per decade, the one
    with the lowest sum of decade median errors (every decade counts the same; sums within
    half a percentage point count as equal and the fewer knots win). Not the lowest worst
    decade: where a decade holds one outlying point (the 2 KB first size of a sweep at 2-4x
    the next size's time), matching it would lift the whole latency regime above the next
    decade's measurements (sizes increasing). ``floor``: ``monotone_floor`` of these points,
    if already computed."""
    decade = decades(sizes)
    floor = floor if floor is not None else monotone_floor(sizes, seconds)
    fits = []
    for per_decade in KNOT_GRIDS:
        knot_sizes = knots(sizes, per_decade)
        at_points = basis(knot_sizes, sizes)
        for candidate in _candidates(knot_sizes, sizes, seconds, floor):
            errors = decade_errors(at_points @ candidate, seconds, decade)
            fits.append((float(errors.max()), float(errors.sum()), len(knot_sizes), knot_sizes, candidate))
    lowest = min(fit[1] for fit in fits)
    *_, knot_sizes, best = min((f for f in fits if f[1] <= lowest + _SIMPLER_WITHIN), key=lambda f: (f[2], f[0]))
    return CommCurve(tuple(float(k) for k in knot_sizes), tuple(float(f"{t:.6g}") for t in best))


Floors = dict[tuple[str, int, int], tuple[float, np.ndarray]]
_KEYS = ["collective", "workers", "devices_per_node"]


def _profiles(frame: pd.DataFrame):
    """(key, sizes, seconds) of every (collective, workers, GPUs per node), sizes increasing."""
    for (collective, workers, per_node), data in frame.groupby(_KEYS):
        data = data.sort_values("size")
        yield ((collective, int(workers), int(per_node)), data["size"].to_numpy(dtype=float),
               data["seconds"].to_numpy(dtype=float))


def comm_floors(frame: pd.DataFrame) -> Floors:
    """``monotone_floor`` of every profile in ``frame``, computed once for the fit and the
    error table (1-2 s for the shared profiles)."""
    return {key: monotone_floor(sizes, seconds) for key, sizes, seconds in _profiles(frame)}


def fit_comm(frame: pd.DataFrame, gpu: GPU, floors: Floors | None = None) -> CommModel:
    """Curves for every (collective, workers, GPUs per node) with >= 8 measured sizes."""
    curves = {}
    for key, sizes, seconds in _profiles(frame):
        if len(sizes) < 8 or key[1] < 2:
            continue
        curves[key] = fit_curve(sizes, seconds, (floors or {}).get(key))
    return CommModel(gpu.name, gpu.link_bytes_per_s, curves)


def predict_comm(model: CommModel, frame: pd.DataFrame) -> np.ndarray:
    predicted = np.empty(len(frame))
    for i, (collective, workers, per_node, size) in enumerate(
            frame[["collective", "workers", "devices_per_node", "size"]].itertuples(index=False)):
        if collective == ALL_REDUCE:
            predicted[i] = model.all_reduce(float(size), int(workers), int(per_node))
        else:
            predicted[i] = model.send_recv(float(size), same_node=int(per_node) >= 2)
    return predicted


def comm_errors(model: CommModel, frame: pd.DataFrame, floors: Floors | None = None) -> pd.DataFrame:
    """Median absolute error (%) per (collective, workers, GPUs per node) and size decade, the
    worst decade, and ``floor_pct``: the lowest worst-decade error any non-decreasing curve
    reaches on the same points (monotone_floor; ``floors`` if already computed)."""
    err = np.abs(predict_comm(model, frame) / frame["seconds"].to_numpy() - 1.0) * 100.0
    data = frame.assign(err=err, decade=decades(frame["size"].to_numpy(dtype=float)).astype(int))
    table = data.pivot_table(index=_KEYS, columns="decade", values="err", aggfunc="median")
    table.columns = [f"1e{c}_pct" for c in table.columns]
    table["all_pct"] = data.groupby(_KEYS)["err"].median()
    table["worst_decade_pct"] = table[[c for c in table.columns if c.startswith("1e")]].max(axis=1)
    floors = floors if floors is not None else comm_floors(frame)
    table["floor_pct"] = pd.Series({key: 100.0 * eps for key, (eps, _) in floors.items()})
    return table.reset_index()
