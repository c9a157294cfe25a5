"""Fit communication curves (chironsim/perf/comm.py) to measured NCCL timings, and bound how
well any such curve can fit them.

A curve is continuous and non-decreasing in message size, with knots at fractions of a decade;
its knot times are fitted by linear programming to minimise the absolute relative error with
each size decade weighted equally (`lp_curve`).

Small-message timings in Vidur's profiles are noisy in a way no non-decreasing curve can
follow: at 8 GPUs on one node the medians of neighbouring sizes jump between two modes
(e.g. 20 and 37 us on H100), and the first size of a sweep (2 KB) sometimes takes 1.6-3.8x
as long as the next one (10 KB). Two exact bounds say what the data allows:
`monotone_floor`, the smallest worst-decade median error that *any* non-decreasing function
of size can reach; and `decade_plan`, the fewest decades any such function must leave above
the per-decade target (DECADE_TARGET, 10 %) and how low each of those can come. The fit
tries L1 candidates (the plain fit, trimmed refits that follow each decade's majority mode,
the fit held to the floor's points) and, where none leaves as few decades over the target as
the plan allows, a mixed-integer fit that holds the plan's decades under it
(`holding_curve`). The calibration report prints both bounds beside each curve's errors, so a
decade that misses the target says whether the model or the measurement is to blame.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.optimize import Bounds, LinearConstraint, linprog, milp

from chironsim.catalog import GPU
from chironsim.errors import ChironError
from chironsim.perf.comm import ALL_REDUCE, CommCurve, CommModel

_US = 1e-6  # knot times are solved for in microseconds for a well-conditioned problem
KNOT_GRIDS = (4, 8, 16)  # knots per decade tried by fit_curve, coarsest first
_SIMPLER_WITHIN = 0.005  # sums of decade errors within 0.5 points of the lowest count as equal
_TRIM_KEEP = 0.6  # a trimmed refit keeps the best-fitting 60 % of each decade
_FLOOR_SLACK = (1.01, 1.1, 1.25, 1.5)
_FLOOR_BISECTIONS = 30  # relative precision of the floor: 2**-30
DECADE_TARGET = 0.10  # issue 11: median absolute error <= 10 % in every size decade
_HELD_TOLERANCE = 0.099  # a held decade's points: just under the target, so its median clears it
_HELD_GRIDS = (16, 32)  # knots per decade tried, coarsest first, for a curve holding decades
_LEAST_SLACK = 1.02  # a free decade is held within this factor of its least error
_MILP_NODES = 20_000  # branch-and-bound nodes per holding fit: a deterministic limit, unlike time


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


def _steps(n: int) -> sparse.csr_matrix:
    """Rows t[k] - t[k+1] (<= 0 keeps ``n`` knot times non-decreasing)."""
    return sparse.csr_matrix((np.r_[np.ones(n - 1), -np.ones(n - 1)],
                              (np.r_[np.arange(n - 1), np.arange(n - 1)], np.r_[np.arange(n - 1), np.arange(1, n)])),
                             shape=(n - 1, n))


def lp_curve(knot_sizes: np.ndarray, sizes: np.ndarray, seconds: np.ndarray, weights: np.ndarray,
             within: np.ndarray | None = None, tolerance: float = 0.0) -> np.ndarray | None:
    """Knot times (seconds, non-decreasing) minimising sum(w |pred/measured - 1|): a linear
    program. With ``within`` (a mask of points) every such point must also satisfy
    |pred/measured - 1| <= ``tolerance``; None if no curve on these knots can."""
    n, m = len(knot_sizes), len(sizes)
    scaled = sparse.csr_matrix(basis(knot_sizes, sizes) / seconds[:, None] * _US)
    eye = sparse.eye(m)
    steps = _steps(n)
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


def _chain(sizes: np.ndarray, seconds: np.ndarray, eps: float | dict[float, float | None]) -> np.ndarray | None:
    """Points a non-decreasing function can pass within ``eps`` of, a majority of every decade
    (None if no such function exists). ``eps`` is one tolerance for every decade, or one per
    decade, None leaving that decade free (no point need be near). Decades are taken in order,
    each ending as low as it can, which never hurts the next one."""
    decade = decades(sizes)
    keep = np.zeros(len(sizes), dtype=bool)
    level = 0.0
    for d in np.unique(decade):
        tolerance = eps.get(d) if isinstance(eps, dict) else eps
        if tolerance is None:
            continue
        idx = np.flatnonzero(decade == d)
        level, chosen = _decade_chain(seconds[idx], tolerance, level, _majority(len(idx)))
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


@dataclass(frozen=True)
class DecadePlan:
    """What a profile's data allows against a per-decade target (DECADE_TARGET).

    held: the largest set of size decades that some non-decreasing function of size keeps at
    median error <= target all at once (of several such sets, the one whose other decades can
    come lowest). least: for every other decade, the lowest median error it can reach while the
    held ones stay at the target (decades in order, each with the earlier ones at theirs). No
    non-decreasing curve has fewer decades above the target than ``len(least)``; both are
    necessary conditions (the majority test of `_majority`), so they bound every curve from
    below."""

    held: frozenset[float]
    least: dict[float, float]

    @property
    def over_target(self) -> int:
        return len(self.least)


def _least_error(sizes: np.ndarray, seconds: np.ndarray, fixed: dict[float, float | None], decade: float) -> float:
    """Lowest tolerance of ``decade`` that leaves ``fixed`` (per-decade tolerances) feasible."""
    lo, hi = 0.0, 1.0
    while _chain(sizes, seconds, {**fixed, decade: hi}) is None:
        lo, hi = hi, 2 * hi
    for _ in range(_FLOOR_BISECTIONS):
        mid = 0.5 * (lo + hi)
        if _chain(sizes, seconds, {**fixed, decade: mid}) is None:
            lo = mid
        else:
            hi = mid
    return hi


def decade_plan(sizes: np.ndarray, seconds: np.ndarray, target: float = DECADE_TARGET) -> DecadePlan:
    """The `DecadePlan` of one profile (sizes increasing): subsets of decades are tried from the
    largest down with the exact chain test of `monotone_floor`."""
    all_decades = [float(d) for d in np.unique(decades(sizes))]
    for count in range(len(all_decades), -1, -1):
        plans = []
        for held in itertools.combinations(all_decades, count):
            tolerances: dict[float, float | None] = {d: (target if d in held else None) for d in all_decades}
            if _chain(sizes, seconds, tolerances) is None:
                continue
            least = {}
            for d in [d for d in all_decades if d not in held]:
                least[d] = _least_error(sizes, seconds, tolerances, d)
                tolerances[d] = least[d]
            plans.append(DecadePlan(frozenset(held), least))
        if plans:
            return min(plans, key=lambda p: (max(p.least.values(), default=0.0), sum(p.least.values())))
    raise AssertionError("the empty set of decades is always feasible")


def holding_curve(knot_sizes: np.ndarray, sizes: np.ndarray, seconds: np.ndarray, weights: np.ndarray,
                  tolerances: dict[float, float]) -> np.ndarray | None:
    """Knot times (seconds, non-decreasing) minimising sum(w |pred/measured - 1|) while, in each
    decade of ``tolerances``, more than half of the points lie within its tolerance (so the
    decade's median error does, for odd and even counts alike): a mixed-integer program with one
    binary per such point (HiGHS, at most _MILP_NODES nodes). None if it is infeasible on these
    knots or not solved to optimality within the node limit."""
    n, m = len(knot_sizes), len(sizes)
    decade = decades(sizes)
    held = np.flatnonzero(np.isin(decade, list(tolerances)))
    h = len(held)
    ratio = sparse.csr_matrix(basis(knot_sizes, sizes) / seconds[:, None] * _US)  # pred / measured per knot-us
    top = 2.0 * float(seconds.max()) / _US  # knot times bounded, for a finite big-M
    big = top * _US / seconds[held] + 1.0
    tol = np.array([tolerances[d] for d in decade[held]])

    def zeros(rows: int, cols: int) -> sparse.csr_matrix:
        return sparse.csr_matrix((rows, cols))

    steps = _steps(n)
    at_held = ratio[held]
    rows = [
        sparse.hstack([ratio, -sparse.eye(m), zeros(m, h)]),  # pred/t - 1 <= e
        sparse.hstack([-ratio, -sparse.eye(m), zeros(m, h)]),  # 1 - pred/t <= e
        sparse.hstack([steps, zeros(n - 1, m + h)]),  # non-decreasing knots
        sparse.hstack([at_held, zeros(h, m), sparse.diags(big)]),  # z=1: pred/t <= 1 + tol
        sparse.hstack([-at_held, zeros(h, m), sparse.eye(h)]),  # z=1: pred/t >= 1 - tol
    ]
    upper = [np.ones(m), -np.ones(m), np.zeros(n - 1), 1.0 + tol + big, tol]
    lower = [np.full(len(u), -np.inf) for u in upper]
    for d in tolerances:
        members = np.flatnonzero(decade[held] == d)
        rows.append(sparse.csr_matrix((np.ones(len(members)), (np.zeros(len(members)), n + m + members)),
                                      shape=(1, n + m + h)))
        lower.append(np.array([len(members) // 2 + 1.0]))
        upper.append(np.array([np.inf]))
    result = milp(np.r_[np.zeros(n), weights, np.zeros(h)],
                  constraints=LinearConstraint(sparse.vstack(rows).tocsr(), np.concatenate(lower), np.concatenate(upper)),
                  integrality=np.r_[np.zeros(n + m), np.ones(h)],
                  bounds=Bounds(np.r_[np.full(n, 0.1), np.zeros(m + h)], np.r_[np.full(n, top), np.full(m, np.inf), np.ones(h)]),
                  options={"node_limit": _MILP_NODES})
    if result.status != 0 or result.x is None:
        return None
    return np.maximum.accumulate(result.x[:n]) * _US


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


class DataFloor(NamedTuple):
    """What no non-decreasing curve can beat on one profile: ``eps`` and ``points`` from
    `monotone_floor`, ``plan`` from `decade_plan`."""

    eps: float
    points: np.ndarray
    plan: DecadePlan


def data_floor(sizes: np.ndarray, seconds: np.ndarray) -> DataFloor:
    return DataFloor(*monotone_floor(sizes, seconds), decade_plan(sizes, seconds))


def _holding_candidates(sizes: np.ndarray, seconds: np.ndarray, plan: DecadePlan):
    """(knot sizes, knot times) of the `holding_curve` fit that keeps the plan's held decades
    under the target and its other decades within _LEAST_SLACK of their least error, on the
    coarsest knot grid of _HELD_GRIDS that can (none if neither can). Coarser grids were tried
    on the shared profiles: they cannot follow A100 8-GPU timings, and proving that takes the
    solver longer than solving on a finer grid."""
    decade = decades(sizes)
    weights = 1.0 / pd.Series(decade).map(pd.Series(decade).value_counts()).to_numpy(dtype=float)
    tolerances = {d: _HELD_TOLERANCE for d in plan.held}
    tolerances.update({d: e * _LEAST_SLACK + 1e-4 for d, e in plan.least.items()})
    for per_decade in _HELD_GRIDS:
        knot_sizes = knots(sizes, per_decade)
        curve = holding_curve(knot_sizes, sizes, seconds, weights, tolerances)
        if curve is not None:
            return [(knot_sizes, curve)]
    return []


def fit_curve(sizes: np.ndarray, seconds: np.ndarray, floor: DataFloor | None = None) -> CommCurve:
    """The candidate curve (`_candidates` on knot grids of 4, 8 and 16 per decade) with, in
    order: the fewest size decades whose median error exceeds DECADE_TARGET; among those, the
    lowest error of the worst such decade (within half a point); then the lowest sum of decade
    median errors (every decade counts the same; sums within half a point count as equal and
    the fewer knots win). Where no such candidate has as few decades over the target as the data
    allows (``floor.plan``, `decade_plan`), the `holding_curve` fits of that plan join them.

    A decade left over the target is one the data forces there: typically a lone outlying
    point (the 2 KB first size of a sweep at 1.6-3.8x the next size's time), which a curve could
    only match by lifting the whole latency regime above the next decade's measurements (sizes
    increasing). ``floor``: ``data_floor`` of these points, if already computed."""
    decade = decades(sizes)
    floor = floor if floor is not None else data_floor(sizes, seconds)
    fits = []

    def consider(knot_sizes: np.ndarray, candidate: np.ndarray) -> None:
        errors = decade_errors(basis(knot_sizes, sizes) @ candidate, seconds, decade)
        over = errors[errors > DECADE_TARGET]
        fits.append((int(len(over)), float(over.max()) if len(over) else 0.0, float(errors.max()),
                     float(errors.sum()), len(knot_sizes), knot_sizes, candidate))

    for per_decade in KNOT_GRIDS:
        knot_sizes = knots(sizes, per_decade)
        for candidate in _candidates(knot_sizes, sizes, seconds, (floor.eps, floor.points)):
            consider(knot_sizes, candidate)
    if min(f[0] for f in fits) > floor.plan.over_target:
        for knot_sizes, candidate in _holding_candidates(sizes, seconds, floor.plan):
            consider(knot_sizes, candidate)
    fewest = min(f[0] for f in fits)
    fits = [f for f in fits if f[0] == fewest]
    least_over = min(f[1] for f in fits)
    fits = [f for f in fits if f[1] <= least_over + _SIMPLER_WITHIN]
    lowest = min(f[3] for f in fits)
    *_, knot_sizes, best = min((f for f in fits if f[3] <= lowest + _SIMPLER_WITHIN), key=lambda f: (f[4], f[2]))
    return CommCurve(tuple(float(k) for k in knot_sizes), tuple(float(f"{t:.6g}") for t in best))


Floors = dict[tuple[str, int, int], DataFloor]
_KEYS = ["collective", "workers", "devices_per_node"]


def _profiles(frame: pd.DataFrame):
    """(key, sizes, seconds) of every (collective, workers, GPUs per node), sizes increasing."""
    for (collective, workers, per_node), data in frame.groupby(_KEYS):
        data = data.sort_values("size")
        yield ((collective, int(workers), int(per_node)), data["size"].to_numpy(dtype=float),
               data["seconds"].to_numpy(dtype=float))


def comm_floors(frame: pd.DataFrame) -> Floors:
    """``data_floor`` of every profile in ``frame``, computed once for the fit and the error
    table."""
    return {key: data_floor(sizes, seconds) for key, sizes, seconds in _profiles(frame)}


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
    worst decade, and what the data allows (``floors`` if already computed): ``floor_pct``, the
    lowest worst-decade error any non-decreasing curve reaches on the same points
    (`monotone_floor`); ``over_10pct``, the decades the curve leaves above DECADE_TARGET, beside
    ``fewest_over_10pct``, the fewest any non-decreasing curve can (`decade_plan`), and
    ``least_over_pct``, the lowest error the worst of those can reach while the others stay
    under the target (0 where none need exceed it)."""
    err = np.abs(predict_comm(model, frame) / frame["seconds"].to_numpy() - 1.0) * 100.0
    data = frame.assign(err=err, decade=decades(frame["size"].to_numpy(dtype=float)).astype(int))
    table = data.pivot_table(index=_KEYS, columns="decade", values="err", aggfunc="median")
    table.columns = [f"1e{c}_pct" for c in table.columns]
    table["all_pct"] = data.groupby(_KEYS)["err"].median()
    table["worst_decade_pct"] = table[[c for c in table.columns if c.startswith("1e")]].max(axis=1)
    floors = floors if floors is not None else comm_floors(frame)
    table["floor_pct"] = pd.Series({key: 100.0 * floor.eps for key, floor in floors.items()})
    table["over_10pct"] = (table[[c for c in table.columns if c.startswith("1e")]] > 100.0 * DECADE_TARGET).sum(axis=1)
    table["fewest_over_10pct"] = pd.Series({key: floor.plan.over_target for key, floor in floors.items()})
    table["least_over_pct"] = pd.Series({key: 100.0 * max(floor.plan.least.values(), default=0.0)
                                         for key, floor in floors.items()})
    return table.reset_index()
