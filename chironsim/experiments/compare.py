"""Read result and sweep folders for analysis: side-by-side tables and figure data.

``chironsim compare`` and ``chironsim plot`` accept either kind of folder, so everything here
starts by telling them apart. A *result folder* is what ``chironsim run`` writes. A *sweep
folder* is what ``chironsim sweep`` writes::

    OUT/runs/<point_id>/   one result folder per grid point (its manifest has "point", "point_id")
    OUT/runs.parquet       one row per point × request_class: point_id, status, error, one
                           column per grid axis (policy, seed, workload.streams.0.rate_scale, …)
                           and the summary's metric columns
    OUT/summary.parquet    grouped over seeds: the axes except seed, request_class, n, and per
                           metric <metric>_mean, <metric>_ci_low, <metric>_ci_high
    OUT/spec.yaml

Only the two Parquet tables and the run folders are read, so a sweep can be compared and
plotted while its spec format evolves.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from chironsim.errors import ChironError
from chironsim.metrics.format import MISSING
from chironsim.metrics.store import READ_ERRORS, is_result_dir, load_tables
from chironsim.metrics.summary import ALL, SUMMARY_SCHEMA
from chironsim.metrics.tables import FLOAT, INT

#: Group name of the rows that hold cluster-wide columns (the summary repeats them per class).
CLUSTER = "cluster"
#: Per-class metrics a comparison shows, in order.
CLASS_METRICS = ("slo_attainment", "ttft_p50", "ttft_p99", "tpot_p50", "tpot_p99")
#: Cluster-wide metrics a comparison shows, in order.
CLUSTER_METRICS = ("gpu_hours", "goodput_tokens_per_gpu_hour")
#: Summary columns that are identical on every row of one run.
CLUSTER_COLUMNS = ("gpu_hours", "cost_usd", "goodput_tokens_per_gpu_hour")

SEED_AXIS = "seed"
_LATENCY_PREFIXES = ("ttft_", "tpot_", "e2e_", "itl_", "queue_")
#: Per-class summary columns a comparison can show (``--metrics``).
COMPARABLE_METRICS = tuple(name for name, kind in SUMMARY_SCHEMA
                           if kind in (INT, FLOAT) and name not in CLUSTER_COLUMNS)


# ----------------------------------------------------------------------------- sweep folders


@dataclass(frozen=True)
class Sweep:
    """The tables of a sweep folder.

    ``axes`` are the grid axes in ``runs.parquet`` order (seed included when it varies);
    ``metrics`` the summary metrics ``summary.parquet`` aggregates over seeds.
    """

    path: Path
    runs: pd.DataFrame
    summary: pd.DataFrame
    axes: tuple[str, ...]
    metrics: tuple[str, ...]

    @property
    def point_axes(self) -> tuple[str, ...]:
        """Axes that tell aggregated points apart: every axis except the seed."""
        return tuple(a for a in self.axes if a != SEED_AXIS)

    def run_dir(self, point_id: str) -> Path:
        return self.path / "runs" / str(point_id)


def is_sweep_dir(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` holds a sweep's aggregated tables."""
    p = Path(path)
    return (p / "runs.parquet").is_file() and (p / "summary.parquet").is_file()


def load_sweep(path: str | os.PathLike[str]) -> Sweep:
    """Read a sweep folder's ``runs.parquet`` and ``summary.parquet``."""
    p = Path(path)
    if not is_sweep_dir(p):
        raise ChironError(f"{p}: not a sweep folder (expected runs.parquet and summary.parquet)")
    runs, summary = (_read_sweep_table(p / name) for name in ("runs.parquet", "summary.parquet"))
    for table, frame, needed in (("runs.parquet", runs, ("point_id", "request_class")),
                                 ("summary.parquet", summary, ("request_class",))):
        missing = [c for c in needed if c not in frame.columns]
        if missing:
            raise ChironError(f"{p / table}: lacks the column(s) {', '.join(missing)}")
    metrics = tuple(c.removesuffix("_mean") for c in summary.columns if c.endswith("_mean")
                    and f"{c.removesuffix('_mean')}_ci_low" in summary.columns)
    aggregated = {f"{m}_{s}" for m in metrics for s in ("mean", "ci_low", "ci_high")}
    # The summary is grouped by exactly the axes but seed; runs.parquet may carry more
    # bookkeeping columns (wall time, resumed, ...) that are not axes.
    axes = [c for c in summary.columns if c not in ("request_class", "n") and c not in aggregated]
    if SEED_AXIS in runs.columns:
        axes.append(SEED_AXIS)
    missing = [a for a in axes if a not in runs.columns]
    if missing:
        raise ChironError(f"{p / 'runs.parquet'}: lacks the axis column(s) {', '.join(missing)} "
                          "that summary.parquet groups by")
    return Sweep(p, runs, summary, tuple(axes), metrics)


def _read_sweep_table(path: Path) -> pd.DataFrame:
    """A sweep table; a truncated or unreadable one is a user error naming the file."""
    try:
        return pd.read_parquet(path)
    except READ_ERRORS as err:
        first = (str(err).strip() or type(err).__name__).splitlines()[0]
        raise ChironError(f"{path}: cannot read the sweep table ({first}); run the same "
                          "'chironsim sweep' command again to rewrite it") from None


def varying_axes(table: pd.DataFrame, axes: Sequence[str]) -> list[str]:
    """The axes that take more than one value in ``table``: the others label nothing."""
    return [a for a in axes if a in table.columns and table[a].nunique(dropna=False) > 1]


def _folder_kind(path: Path) -> str:
    if is_result_dir(path):
        return "run"
    if is_sweep_dir(path):
        return "sweep"
    if not path.exists():
        raise ChironError(f"{path}: folder not found")
    raise ChironError(f"{path}: neither a result folder (manifest.json and tables, as written by "
                      "'chironsim run') nor a sweep folder (runs.parquet and summary.parquet)")


def short_axis_names(axes: Sequence[str]) -> dict[str, str]:
    """``workload.streams.0.rate_scale`` → ``rate_scale`` where the last part is unambiguous."""
    last = [a.rsplit(".", 1)[-1] for a in axes]
    return {a: (s if last.count(s) == 1 else a) for a, s in zip(axes, last)}


def _value_text(value: object) -> str:
    if isinstance(value, (float, np.floating)):
        return f"{float(value):g}"
    return str(value)


def point_label(values: dict[str, object]) -> str:
    """``{"policy": "static", "workload.streams.0.rate_scale": 2.0}`` →
    ``policy=static rate_scale=2``."""
    short = short_axis_names(list(values))
    return " ".join(f"{short[a]}={_value_text(v)}" for a, v in values.items())


# ----------------------------------------------------------------------------- compare


def compare(paths: Sequence[str | os.PathLike[str]],
            metrics: Sequence[str] = CLASS_METRICS) -> pd.DataFrame:
    """The metrics of several runs or sweep points side by side, as a tidy table.

    ``metrics`` are the per-class summary columns to show (default :data:`CLASS_METRICS`;
    any of :data:`COMPARABLE_METRICS`, e.g. ``itl_p999`` or ``queue_p99``). A sweep point
    has a value only for the metrics its spec aggregated (``metrics:``); others read NaN.

    Each path is a result folder (one column, labelled by the folder's name) or a sweep folder
    (one column per aggregated point, labelled by its axis values). Returns one row per column
    × group × metric with columns ``run``, ``source``, ``request_class`` (a class, ``all``, or
    ``cluster`` for the cluster-wide GPU-hours and goodput), ``metric``, ``value`` (a sweep
    point's mean over seeds), ``ci_low``, ``ci_high`` (NaN for single runs) and ``n`` (runs
    behind the value). Pivot it, or render it with :func:`comparison_table`.
    """
    if not paths:
        raise ChironError("compare needs at least one result or sweep folder")
    metrics = tuple(metrics)
    unknown = [m for m in metrics if m not in COMPARABLE_METRICS]
    if unknown or not metrics:
        raise ChironError(f"compare: unknown metric {unknown[0] if unknown else '(none)'!r}; "
                          f"per-class summary metrics are {', '.join(COMPARABLE_METRICS)}")
    columns: list[tuple[str, str, pd.DataFrame]] = []  # (label, source, tidy rows)
    for raw in paths:
        path = Path(raw)
        if _folder_kind(path) == "run":
            tables, _ = load_tables(path)
            columns.append((path.name or str(path), str(path),
                            _run_rows(tables["summary"], metrics)))
        else:
            sweep = load_sweep(path)
            for label, rows in _sweep_columns(sweep, metrics):
                columns.append((label, str(path), rows))
    labels = _unique_labels([(label, source) for label, source, _ in columns])
    frames = [rows.assign(run=label, source=source)
              for label, (_, source, rows) in zip(labels, columns)]
    out = pd.concat(frames, ignore_index=True)
    first = ["run", "source", "request_class", "metric", "value", "ci_low", "ci_high", "n"]
    return out[first + [c for c in out.columns if c not in first]]


def _run_rows(summary: pd.DataFrame, metrics: Sequence[str] = CLASS_METRICS) -> pd.DataFrame:
    rows = []
    for _, row in summary.iterrows():
        for metric in metrics:
            rows.append((str(row["request_class"]), metric, float(row[metric])))
    if len(summary):
        first = summary.iloc[0]
        rows += [(CLUSTER, m, float(first[m])) for m in CLUSTER_METRICS]
    frame = pd.DataFrame(rows, columns=["request_class", "metric", "value"])
    return frame.assign(ci_low=np.nan, ci_high=np.nan, n=1)


def _sweep_columns(sweep: Sweep, metrics: Sequence[str] = CLASS_METRICS) -> list[tuple[str, pd.DataFrame]]:
    summary = sweep.summary
    axes = [a for a in sweep.point_axes if a in summary.columns]
    labelled = varying_axes(summary, axes)
    parts = summary.groupby(axes, sort=False, dropna=False) if axes else [((), summary)]
    out = []
    for key, part in parts:
        key = dict(zip(axes, key if isinstance(key, tuple) else (key,)))
        rows = []
        for _, row in part.iterrows():
            for metric in metrics:
                rows.append((str(row["request_class"]), metric, *_aggregate(row, metric)))
        # Cluster columns are the same on every class row; take the all-classes row if any.
        alls = part[part["request_class"].astype(str) == ALL]
        row = (alls if len(alls) else part).iloc[0]
        rows += [(CLUSTER, m, *_aggregate(row, m)) for m in CLUSTER_METRICS]
        frame = pd.DataFrame(rows, columns=["request_class", "metric", "value", "ci_low",
                                            "ci_high", "n"])
        for a in axes:
            frame[a] = key[a]
        label = point_label({a: key[a] for a in labelled}) if labelled else sweep.path.name
        out.append((label, frame))
    return out


def _aggregate(row: pd.Series, metric: str) -> tuple[float, float, float, int]:
    def get(col: str) -> float:
        return float(row[col]) if col in row.index else math.nan

    n = int(row["n"]) if "n" in row.index and not pd.isna(row["n"]) else 0
    return get(f"{metric}_mean"), get(f"{metric}_ci_low"), get(f"{metric}_ci_high"), n


def _unique_labels(items: list[tuple[str, str]]) -> list[str]:
    """Column labels; when two collide (same folder name, or the same point in two sweeps),
    they are prefixed by the folder they came from."""
    labels = [label for label, _ in items]
    if len(set(labels)) == len(labels):
        return labels
    multi = len({source for _, source in items}) > 1
    out = [f"{Path(source).name}:{label}" if multi and labels.count(label) > 1 else label
           for label, source in items]
    seen: dict[str, int] = {}
    for i, label in enumerate(out):  # still equal (e.g. a folder given twice): number them
        seen[label] = seen.get(label, 0) + 1
        if seen[label] > 1:
            out[i] = f"{label} ({seen[label]})"
    return out


# ----------------------------------------------------------------------------- rendering

_TITLES = {
    "slo_attainment": "SLO attainment",
    "ttft_p50": "TTFT p50", "ttft_p99": "TTFT p99",
    "tpot_p50": "TPOT p50", "tpot_p99": "TPOT p99", "ttft_p999": "TTFT p99.9",
    "itl_p50": "ITL p50", "itl_p90": "ITL p90", "itl_p99": "ITL p99", "itl_p999": "ITL p99.9",
    "queue_p50": "queue p50", "queue_p99": "queue p99",
    "gpu_hours": "GPU-hours",
    "goodput_tokens_per_gpu_hour": "goodput",
}
# Latency rows share one unit, picked from the row's median value (seconds per unit), so that
# one outlying run does not push every other cell to 0.00x.
_TIME_UNITS = (("ms", 1e-3, 1.0), ("s", 1.0, 120.0), ("min", 60.0, 7200.0), ("h", 3600.0, math.inf))


def _row_unit(metric: str, values: np.ndarray) -> tuple[str, float]:
    """(unit, divisor) for one row of the side-by-side table."""
    if metric == "slo_attainment":
        return "%", 0.01
    if metric == "gpu_hours":
        return "GPU-h", 1.0
    if metric == "goodput_tokens_per_gpu_hour":
        return "tokens/GPU-h", 1.0
    if metric.startswith(_LATENCY_PREFIXES):
        finite = values[np.isfinite(values)]
        typical = float(np.median(finite)) if len(finite) else 0.0
        for unit, scale, below in _TIME_UNITS:
            if typical < below:
                return unit, scale
    return "", 1.0


def _number(x: float) -> str:
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.3g}"


def _cell(value: float, ci_low: float, ci_high: float, divisor: float) -> str:
    if math.isnan(value):
        return MISSING
    text = _number(value / divisor)
    if not (math.isnan(ci_low) or math.isnan(ci_high)):
        text += f" ± {_number((ci_high - ci_low) / 2 / divisor)}"
    return text


def comparison_table(tidy: pd.DataFrame) -> pd.DataFrame:
    """The side-by-side table of :func:`compare`'s rows, as text cells.

    Columns ``class`` and ``metric`` (the metric's name with its unit), then one column per
    run or sweep point in input order; sweep points read ``mean ± CI half-width``. Each row
    has one unit so that cells compare at a glance; ``-`` marks a metric a run does not have.
    """
    runs = list(dict.fromkeys(tidy["run"]))
    groups = list(dict.fromkeys(g for g in tidy["request_class"] if g != CLUSTER))
    groups.sort(key=lambda g: g == ALL)  # keep first-seen order, the all-classes row last
    if (tidy["request_class"] == CLUSTER).any():
        groups.append(CLUSTER)
    indexed = tidy.set_index(["request_class", "metric", "run"])
    class_metrics = list(dict.fromkeys(tidy.loc[tidy["request_class"] != CLUSTER, "metric"]))
    rows = []
    for group in groups:
        metrics = CLUSTER_METRICS if group == CLUSTER else class_metrics
        for metric in metrics:
            cells = [indexed.loc[(group, metric, r)] if (group, metric, r) in indexed.index
                     else None for r in runs]
            values = np.array([np.nan if c is None else float(c["value"]) for c in cells])
            unit, divisor = _row_unit(metric, values)
            title = f"{_TITLES.get(metric, metric)} ({unit})" if unit else _TITLES.get(metric, metric)
            texts = [MISSING if c is None else
                     _cell(float(c["value"]), float(c["ci_low"]), float(c["ci_high"]), divisor)
                     for c in cells]
            rows.append([group, title, *texts])
    return pd.DataFrame(rows, columns=["class", "metric", *runs])


def format_comparison(table: pd.DataFrame) -> str:
    """Render :func:`comparison_table` for the terminal.

    Long column labels (sweep points: ``policy=static rate_scale=2``) are stacked one
    ``axis=value`` per header line, so many points still fit side by side.
    """
    heads = [str(c).split(" ") if i >= 2 else [str(c)] for i, c in enumerate(table.columns)]
    depth = max(len(h) for h in heads)
    heads = [[""] * (depth - len(h)) + h for h in heads]
    body = [[str(v) for v in row] for row in table.itertuples(index=False)]
    widths = [max([len(x) for x in h] + [len(r[i]) for r in body]) for i, h in enumerate(heads)]

    def line(cells: list[str]) -> str:
        parts = [c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))]
        return "  ".join(parts).rstrip()

    lines = [line([h[k] for h in heads]) for k in range(depth)]
    lines.append("  ".join("-" * w for w in widths))
    previous = None
    for row in body:
        shown = list(row)
        if row[0] == previous:  # print each class once, as a block
            shown[0] = ""
        previous = row[0]
        lines.append(line(shown))
    return "\n".join(lines)


# ----------------------------------------------------------------------------- plot data


def find_load_axis(axes: Sequence[str], requested: str | None = None) -> str:
    """The sweep axis to put on the x-axis of load plots.

    ``requested`` (``--x``) may be an axis's full name or its last dotted part. Otherwise the
    load axis is the one whose last part contains ``rate`` (``rate``, ``rate_scale``,
    ``mean_rate``, …); among several, a single ``rate_scale`` wins.
    """
    candidates = [a for a in axes if a != SEED_AXIS]
    listing = ", ".join(candidates) or "none"
    if requested is not None:
        if requested in candidates:
            return requested
        by_last = [a for a in candidates if a.rsplit(".", 1)[-1] == requested]
        if len(by_last) == 1:
            return by_last[0]
        raise ChironError(f"--x {requested}: not an axis of this sweep (axes: {listing})")
    rates = [a for a in candidates if "rate" in a.rsplit(".", 1)[-1]]
    if len(rates) > 1:
        scales = [a for a in rates if a.rsplit(".", 1)[-1] == "rate_scale"]
        rates = scales if len(scales) == 1 else rates
    if len(rates) == 1:
        return rates[0]
    if not rates:
        raise ChironError(f"no load axis in this sweep (an axis named like '*rate*'); "
                          f"pick one with --x (axes: {listing})")
    raise ChironError(f"several load axes ({', '.join(rates)}); pick one with --x")


def _matches(column: pd.Series, value: object) -> np.ndarray:
    if isinstance(value, (int, float, np.number)) and pd.api.types.is_numeric_dtype(column):
        return np.isclose(column.to_numpy(dtype=float), float(value))
    return (column.astype(str) == str(value)).to_numpy()


def load_point_tables(
    sweep: Sweep, x: str, at: float | None = None
) -> tuple[pd.DataFrame, pd.DataFrame, object]:
    """Requests and timeseries of the sweep's runs at one load, for per-policy figures.

    ``at`` picks the value of the load axis ``x`` (default: the largest, where policies differ
    most). Returns ``(requests, timeseries, at)``: requests of every seed of every point at that
    load, and timeseries of each point's lowest seed (averaging time series over seeds would
    blur the scaling steps being shown), each with the point's axis values as extra columns.
    Points whose run folder is missing or incomplete (failed runs) are left out.
    """
    runs = sweep.runs.drop_duplicates("point_id")
    if x not in runs.columns:
        raise ChironError(f"{sweep.path}: runs.parquet has no column {x!r}")
    loads = sorted(runs[x].dropna().unique())
    if not loads:
        raise ChironError(f"{sweep.path}: runs.parquet has no values for {x}")
    if at is None:
        at = loads[-1]
    else:
        hits = [v for v in loads if bool(_matches(pd.Series([v]), at)[0])]
        if not hits:
            raise ChironError(f"--at {at}: {x} takes the values "
                              f"{', '.join(_value_text(v) for v in loads)}")
        at = hits[0]
    here = runs[_matches(runs[x], at)]
    here = here[[is_result_dir(sweep.run_dir(pid)) for pid in here["point_id"]]]
    group_axes = [a for a in sweep.axes if a != x]
    point_axes = [a for a in group_axes if a != SEED_AXIS]
    lowest_seed: dict[tuple, object] = {}
    if SEED_AXIS in here.columns:
        for _, row in here.iterrows():
            key = tuple(row[a] for a in point_axes)
            seed = row[SEED_AXIS]
            lowest_seed[key] = seed if key not in lowest_seed else min(lowest_seed[key], seed)
    requests, series = [], []
    for _, row in here.iterrows():
        tables, _ = load_tables(sweep.run_dir(row["point_id"]))
        extra = {a: row[a] for a in group_axes}
        requests.append(tables["requests"].assign(**extra))
        key = tuple(row[a] for a in point_axes)
        if SEED_AXIS not in here.columns or row[SEED_AXIS] == lowest_seed[key]:
            series.append(tables["timeseries"].assign(**extra))
    if not requests:
        raise ChironError(f"{sweep.path}: no finished run folder under runs/ at {x}={_value_text(at)}")
    return pd.concat(requests, ignore_index=True), pd.concat(series, ignore_index=True), at


def write_folder_plots(
    path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str] | None = None,
    x: str | None = None,
    at: float | None = None,
) -> list[Path]:
    """``chironsim plot``: the standard figures of a result folder, or the sweep figures of a
    sweep folder (see :func:`chironsim.plots.sweep_figures.write_sweep_plots`). Writes PNGs to
    ``out_dir`` (default ``PATH/plots``) and returns their paths."""
    from chironsim.plots import write_standard_plots
    from chironsim.plots.sweep_figures import write_sweep_plots

    folder = Path(path)
    out = Path(out_dir) if out_dir is not None else folder / "plots"
    if _folder_kind(folder) == "run":
        from chironsim.experiments.result import load_result

        return write_standard_plots(load_result(folder), out)
    sweep = load_sweep(folder)
    x_axis = find_load_axis(sweep.axes, x)
    requests, timeseries, at_value = load_point_tables(sweep, x_axis, at)
    group = [a for a in varying_axes(sweep.summary, sweep.point_axes) if a != x_axis]
    return write_sweep_plots(sweep.summary, requests, timeseries, out, x=x_axis, group=group,
                             at_label=f"{short_axis_names([x_axis])[x_axis]}={_value_text(at_value)}")
