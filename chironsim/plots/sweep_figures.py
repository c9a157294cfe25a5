"""Figures across the points of a sweep: how policies compare as load grows.

Like :mod:`chironsim.plots.figures`, every function takes a table and a matplotlib ``Axes``,
draws on it and returns it, so a notebook can lay them out as it likes. The tables are the
sweep's ``summary.parquet`` (one row per point × class with ``<metric>_mean``,
``<metric>_ci_low``, ``<metric>_ci_high``), or requests / timeseries tables of several runs
concatenated with the point's axis values as extra columns. ``group`` names the columns whose
values tell the lines apart (usually ``["policy"]``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes

from chironsim.metrics.records import FINISHED
from chironsim.metrics.summary import ALL
from chironsim.plots.figures import check_latency_metric, cdf_lines, no_data
from chironsim.plots.standard import save_figures


def _short(name: str, names: Sequence[str]) -> str:
    last = name.rsplit(".", 1)[-1]
    return last if [n.rsplit(".", 1)[-1] for n in names].count(last) == 1 else name


def _text(value: object) -> str:
    return f"{float(value):g}" if isinstance(value, (float, np.floating)) else str(value)


def _groups(table: pd.DataFrame, group: Sequence[str]) -> Iterator[tuple[str, pd.DataFrame]]:
    """(line label, rows) per distinct combination of the ``group`` columns, in first-seen order."""
    group = [g for g in group if g in table.columns]
    if not group:
        yield "", table
        return
    for key, part in table.groupby(group, sort=False, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        if len(group) == 1:
            label = _text(key[0])
        else:
            label = ", ".join(f"{_short(g, group)}={_text(v)}" for g, v in zip(group, key))
        yield label, part


def metric_vs_load(
    summary: pd.DataFrame,
    ax: Axes,
    metric: str,
    x: str,
    group: Sequence[str] = ("policy",),
    request_class: str = ALL,
    scale: float = 1.0,
    ylabel: str | None = None,
) -> Axes:
    """Mean of ``metric`` over seeds against the load axis ``x``, one line per group, with its
    confidence interval as a shaded band (no band where a point has a single seed)."""
    title = f"{ylabel or metric} vs {_short(x, [x])}"
    needed = [f"{metric}_mean", x, "request_class"]
    if summary.empty or any(c not in summary.columns for c in needed):
        return no_data(ax, title)
    rows = summary[summary["request_class"].astype(str) == request_class]
    if rows.empty:
        return no_data(ax, title)
    for label, part in _groups(rows, group):
        part = part.sort_values(x)
        xs = part[x].to_numpy(dtype=float)
        mean = part[f"{metric}_mean"].to_numpy(dtype=float) * scale
        (line,) = ax.plot(xs, mean, marker="o", label=label or None)
        low, high = f"{metric}_ci_low", f"{metric}_ci_high"
        if low in part.columns and high in part.columns:
            ax.fill_between(xs, part[low].to_numpy(dtype=float) * scale,
                            part[high].to_numpy(dtype=float) * scale,
                            color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set_xlabel(_short(x, [x]))
    ax.set_ylabel(ylabel or metric)
    suffix = "" if request_class == ALL else f" ({request_class})"
    ax.set_title(title + suffix)
    ax.grid(True, alpha=0.3)
    if any(label for label, _ in _groups(rows, group)):
        ax.legend()
    return ax


def attainment_vs_load(
    summary: pd.DataFrame, ax: Axes, x: str, group: Sequence[str] = ("policy",),
    request_class: str = ALL,
) -> Axes:
    """SLO attainment (%) against load, one line and 95 % band per policy."""
    ax = metric_vs_load(summary, ax, "slo_attainment", x, group, request_class, scale=100.0,
                        ylabel="SLO attainment (%)")
    if ax.has_data():
        ax.set_ylim(-2, 102)
    return ax


def gpu_hours_vs_load(
    summary: pd.DataFrame, ax: Axes, x: str, group: Sequence[str] = ("policy",)
) -> Axes:
    """Billed GPU-hours against load, one line and band per policy (a cluster-wide column)."""
    return metric_vs_load(summary, ax, "gpu_hours", x, group, ALL, ylabel="GPU-hours")


def latency_cdf_by_group(
    requests: pd.DataFrame, ax: Axes, metric: str = "ttft", group: Sequence[str] = ("policy",),
    log_x: bool = False,
) -> Axes:
    """Empirical CDF of one latency over finished requests (every class), one line per group."""
    check_latency_metric(metric)
    done = requests[requests["status"].astype(str) == FINISHED] if len(requests) else requests
    lines = ((label, part[metric]) for label, part in _groups(done, group))
    return cdf_lines(ax, lines, metric, log_x)


def instances_by_group(
    timeseries: pd.DataFrame, ax: Axes, group: Sequence[str] = ("policy",), state: str = "ready"
) -> Axes:
    """Instances in one lifecycle state, summed over pools, over time, one line per group."""
    title = f"{state} instances"
    if timeseries.empty or state not in timeseries.columns:
        return no_data(ax, title)
    for label, part in _groups(timeseries, group):
        total = part.groupby("time", sort=True)[state].sum()
        ax.step(total.index, total.to_numpy(), where="post", label=label or None)
    ax.set_xlabel("simulated time (s)")
    ax.set_ylabel(f"{state} instances")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if any(label for label, _ in _groups(timeseries, group)):
        ax.legend()
    return ax


def write_sweep_plots(
    summary: pd.DataFrame,
    requests: pd.DataFrame,
    timeseries: pd.DataFrame,
    out_dir: str | os.PathLike[str],
    *,
    x: str,
    group: Sequence[str],
    at_label: str = "",
) -> list[Path]:
    """Write the sweep figures as PNGs and return their paths.

    From ``summary``: ``slo_attainment_vs_load.png`` (every class together; plus one file per
    class when there are several) and ``gpu_hours_vs_load.png``. From ``requests`` and
    ``timeseries`` of the runs at one load (``at_label`` names it in the titles):
    ``ttft_cdf.png``, ``tpot_cdf.png`` and ``instances.png``.
    """
    at = f" at {at_label}" if at_label else ""
    drawings: list[tuple[str, Callable[[Axes], Axes]]] = [
        ("slo_attainment_vs_load.png", lambda ax: attainment_vs_load(summary, ax, x, group)),
    ]
    classes = [c for c in dict.fromkeys(summary["request_class"].astype(str)) if c != ALL]
    if len(classes) > 1:
        drawings += [(f"slo_attainment_vs_load_{c}.png",
                      lambda ax, c=c: attainment_vs_load(summary, ax, x, group, c)) for c in classes]
    drawings += [
        ("gpu_hours_vs_load.png", lambda ax: gpu_hours_vs_load(summary, ax, x, group)),
        *((f"{m}_cdf.png", lambda ax, m=m: _titled(latency_cdf_by_group(requests, ax, m, group), at))
          for m in ("ttft", "tpot")),
        ("instances.png", lambda ax: _titled(instances_by_group(timeseries, ax, group), at)),
    ]
    return save_figures(drawings, out_dir)


def _titled(ax: Axes, suffix: str) -> Axes:
    if suffix and ax.has_data():
        ax.set_title(ax.get_title() + suffix)
    return ax
