"""Standard figures from result tables.

Every function takes a table and a matplotlib ``Axes``, draws on it and returns it, so notebooks
can place the same plots in their own layouts. Nothing here imports ``pyplot``: figures are
created with the object-oriented API, which needs no global state and never changes a user's
backend or opens a window.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd
from matplotlib.axes import Axes

from chironsim.metrics.records import FINISHED

LATENCY_LABELS = {
    "ttft": "time to first token (s)",
    "tpot": "time per output token (s)",
    "itl_max": "largest inter-token gap (s)",
    "e2e": "end-to-end latency (s)",
}


def no_data(ax: Axes, title: str | None = None) -> Axes:
    """Mark an axes as empty instead of drawing a blank or failing."""
    ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center", fontsize=12)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title)
    return ax


def latency_cdf(
    requests: pd.DataFrame, ax: Axes, metric: str = "ttft", log_x: bool = False
) -> Axes:
    """Empirical CDF of one latency over finished requests, one line per request class."""
    check_latency_metric(metric)
    done = requests[requests["status"].astype(str) == FINISHED]
    classes = sorted(done["request_class"].astype(str).unique())
    lines = ((cls, done.loc[done["request_class"].astype(str) == cls, metric]) for cls in classes)
    return cdf_lines(ax, lines, metric, log_x)


def check_latency_metric(metric: str) -> None:
    if metric not in LATENCY_LABELS:
        raise ValueError(f"metric {metric!r} is not one of {', '.join(LATENCY_LABELS)}")


def cdf_lines(ax: Axes, lines: Iterable[tuple[str, pd.Series]], metric: str,
              log_x: bool = False) -> Axes:
    """Draw one empirical CDF per ``(label, values)`` pair (NaNs dropped) and label the axes.

    Shared by the per-run and per-sweep CDF figures so both read the same way.
    """
    title = f"{metric.upper()} CDF"
    drawn = False
    for label, series in lines:
        values = np.sort(series.to_numpy(dtype=float))
        values = values[~np.isnan(values)]
        if len(values) == 0:
            continue
        # Start at 0 on the smallest value so the curve reads as a CDF, not a floating step.
        xs = np.concatenate([values[:1], values])
        fraction = np.arange(len(values) + 1) / len(values)
        ax.step(xs, fraction, where="post",
                label=f"{label} (n={len(values)})" if label else f"n={len(values)}")
        drawn = True
    if not drawn:
        return no_data(ax, title)
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel(LATENCY_LABELS[metric])
    ax.set_ylabel("fraction of finished requests")
    ax.set_ylim(0, 1.02)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend()
    return ax


def _per_pool(
    timeseries: pd.DataFrame, ax: Axes, column: str, ylabel: str, title: str, total: bool
) -> Axes:
    if timeseries.empty:
        return no_data(ax, title)
    pools = sorted(timeseries["pool"].astype(str).unique())
    for pool in pools:
        rows = timeseries[timeseries["pool"].astype(str) == pool].sort_values("time")
        ax.step(rows["time"], rows[column], where="post", label=pool)
    if total and len(pools) > 1:
        summed = timeseries.groupby("time", sort=True)[column].sum()
        ax.step(summed.index, summed.to_numpy(), where="post", label="total", color="black",
                linestyle="--", linewidth=1)
    ax.set_xlabel("simulated time (s)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend()
    return ax


def instances_over_time(timeseries: pd.DataFrame, ax: Axes, state: str = "ready") -> Axes:
    """Instances in one lifecycle state (default ``ready``) per pool, plus the total."""
    if state not in ("provisioning", "loading", "ready", "draining"):
        raise ValueError(f"state {state!r} is not an instance lifecycle state")
    return _per_pool(timeseries, ax, state, f"{state} instances", f"{state} instances per pool",
                     total=True)


def queue_over_time(timeseries: pd.DataFrame, ax: Axes) -> Axes:
    """Waiting requests per pool (instance queues plus the pool's global queue), plus the total."""
    return _per_pool(timeseries, ax, "waiting", "waiting requests", "queue length per pool",
                     total=True)


def kv_utilization_over_time(timeseries: pd.DataFrame, ax: Axes) -> Axes:
    """Mean KV-cache utilisation of each pool's ready instances (gaps where none is ready)."""
    ax = _per_pool(timeseries, ax, "kv_utilization", "KV cache utilisation",
                   "KV utilisation per pool", total=False)
    if not timeseries.empty:
        ax.set_ylim(0, 1.05)
    return ax
