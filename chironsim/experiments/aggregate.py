"""A sweep's aggregated table: means and 95 % confidence intervals over replications.

Seeds are replications of one experiment, every other axis is part of what is compared, so
the summary groups the runs table by every axis but ``seed`` (and by request class) and gives,
per metric, the mean and a Student-t interval. The t interval is the standard choice for a few
independent replications with unknown variance; with one replication it is undefined (NaN).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from chironsim.experiments.spec import SEED_AXIS
from chironsim.metrics.format import MISSING
from chironsim.metrics.summary import ALL

CONFIDENCE = 0.95
OK = "ok"


def summarize_sweep(runs: pd.DataFrame, axes: Sequence[str], metrics: Sequence[str]) -> pd.DataFrame:
    """Group the ``ok`` rows of a runs table by every axis but ``seed`` and by request class.

    Columns: the group axes, ``request_class``, ``n`` (runs in the group), then per metric
    ``<metric>_mean``, ``<metric>_ci_low``, ``<metric>_ci_high``. A run whose metric is NaN
    (e.g. no finished request) is left out of that metric's mean and interval only.
    """
    keys = [a for a in axes if a != SEED_AXIS] + ["request_class"]
    columns = [*keys, "n", *(f"{m}_{s}" for m in metrics for s in ("mean", "ci_low", "ci_high"))]
    ok = runs[runs["status"] == OK]
    if ok.empty:
        return pd.DataFrame({c: pd.Series(dtype=runs[c].dtype if c in runs else float)
                             for c in columns})
    rows = []
    for group_key, group in ok.groupby(keys, sort=False, dropna=False):
        row = dict(zip(keys, group_key if isinstance(group_key, tuple) else (group_key,)))
        row["n"] = len(group)
        for metric in metrics:
            mean, low, high = mean_ci(group[metric].to_numpy(dtype=float))
            row[f"{metric}_mean"], row[f"{metric}_ci_low"], row[f"{metric}_ci_high"] = mean, low, high
        rows.append(row)
    out = pd.DataFrame.from_records(rows, columns=columns)
    for key in keys:  # keep the runs table's dtypes (groupby keys come back as Python objects)
        out[key] = out[key].astype(ok[key].dtype)
    return out


def mean_ci(values: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """Mean and two-sided Student-t interval of the non-NaN values; NaN bounds below 2 values."""
    values = values[~np.isnan(values)]
    n = len(values)
    if n == 0:
        return math.nan, math.nan, math.nan
    mean = float(values.mean())
    if n < 2:
        return mean, math.nan, math.nan
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1) * values.std(ddof=1) / math.sqrt(n))
    return mean, mean - half, mean + half


# ----------------------------------------------------------------------------- terminal

#: Short column titles for the terminal table; other metrics are shown by their column name.
_TITLES = {"slo_attainment": "SLO", "gpu_hours": "GPU-h", "cost_usd": "cost $",
           "goodput_tokens_per_gpu_hour": "goodput/GPU-h", "throughput_rps": "req/s",
           "output_tokens_per_s": "tok/s"}
_UNITS = ((1.0, 1e-3, "ms"), (120.0, 1.0, "s"), (7200.0, 60.0, "min"), (math.inf, 3600.0, "h"))
_SUFFIXES = ((1e9, "G"), (1e6, "M"), (1e4, "k"))


def _title(metric: str) -> str:
    if metric in _TITLES:
        return _TITLES[metric]
    head, _, tail = metric.partition("_")
    return f"{head.upper()} {tail}" if head in ("ttft", "tpot", "e2e") else metric


def _scaled(x: float, half: float, scale: float, unit: str) -> str:
    text = f"{x / scale:.3g}{unit}"
    return text if math.isnan(half) else f"{text} ±{half / scale:.2g}"


def _metric_cell(metric: str, mean: float, low: float, high: float) -> str:
    """``mean ±half-width`` in one unit chosen from the mean (ms, s, min, h; %, k, M)."""
    if math.isnan(mean):
        return MISSING
    half = (high - low) / 2
    if metric == "slo_attainment":
        text = f"{mean * 100:.1f}%"  # not .3g: 99.96 % must not print as 100 %
        return text if math.isnan(half) else f"{text} ±{half * 100:.2g}"
    if metric.split("_")[0] in ("ttft", "tpot", "e2e", "itl"):
        scale, unit = next((s, u) for bound, s, u in _UNITS if mean < bound)
        return _scaled(mean, half, scale, f" {unit}")
    scale, suffix = next(((s, u) for s, u in _SUFFIXES if abs(mean) >= s), (1.0, ""))
    return _scaled(mean, half, scale, suffix)


def _header(axis: str, axes: Sequence[str]) -> str:
    """An axis's last key part (``rate`` for ``workload.streams.0.arrival.rate``) where unique."""
    short = axis.split(".")[-1]
    return short if sum(a.split(".")[-1] == short for a in axes) == 1 else axis


def format_sweep_summary(summary: pd.DataFrame, axes: Sequence[str], metrics: Sequence[str]) -> str:
    """Render the aggregated table: one line per group, ``mean ±half-width`` per metric.

    With a single request class its rows equal the ``all`` rows, so only ``all`` is shown.
    """
    keys = [a for a in axes if a != SEED_AXIS]
    if summary["request_class"].nunique() == 2:
        summary = summary[summary["request_class"] == ALL]
    header = [*(_header(a, keys) for a in keys), "class", "n", *map(_title, metrics)]
    body = []
    for _, row in summary.iterrows():
        cells = [str(row[k]) for k in keys] + [str(row["request_class"]), str(int(row["n"]))]
        cells += [_metric_cell(m, float(row[f"{m}_mean"]), float(row[f"{m}_ci_low"]),
                               float(row[f"{m}_ci_high"])) for m in metrics]
        body.append(cells)
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    n_left = len(keys) + 1

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i < n_left else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths)))

    footer = "(mean ±half-width of the 95 % Student-t interval over seeds)"
    return "\n".join([line(header), "  ".join("-" * w for w in widths), *map(line, body), footer])
