"""The summary table: per request class SLO attainment, latency percentiles and throughput, plus
the cluster's cost columns. It is the table people compare across policies and that regression
checks pin, so every column is defined once, here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd

from chironsim.errors import ConfigError, UnknownNameError
from chironsim.metrics.exact import OrderStatistics, PairwiseSum, percentile, percentile_ranks
from chironsim.metrics.histogram import LogHistogram, merged
from chironsim.metrics.records import FINISHED, REJECTED, UNFINISHED
from chironsim.metrics.slo import RequestClassSpec
from chironsim.metrics.tables import ADDED_COLUMNS, FLOAT, INT, STR, Schema, conform

#: Name of the row that aggregates every class; a request class may therefore not be called so.
ALL = "all"

PERCENTILES = (50, 90, 99)
LATENCY_METRICS = ("ttft", "tpot", "e2e")
#: Per-token inter-token latency quantiles, from the ITL histograms (column suffix, q).
ITL_QUANTILES = (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p999", 0.999))

SUMMARY_SCHEMA: Schema = (
    ("request_class", STR),
    ("requests", INT),
    ("finished", INT),
    ("rejected", INT),
    ("unfinished", INT),
    ("slo_met", INT),
    ("slo_attainment", FLOAT),
    *((f"{m}_p{p}", FLOAT) for m in LATENCY_METRICS for p in PERCENTILES),
    *((f"{m}_mean", FLOAT) for m in LATENCY_METRICS),
    ("throughput_rps", FLOAT),
    ("output_tokens_per_s", FLOAT),
    ("gpu_hours", FLOAT),
    ("cost_usd", FLOAT),
    ("goodput_tokens_per_gpu_hour", FLOAT),
    # Added for KunServe-style tails (issue 10 item 3); last, so earlier columns keep their
    # positions, and NaN where an older stored summary lacks them.
    ("ttft_p999", FLOAT),
    ("queue_p50", FLOAT),
    ("queue_p99", FLOAT),
    *((f"itl_{name}", FLOAT) for name, _ in ITL_QUANTILES),
)

#: Columns appended after summaries were first stored; NaN in an older table.
SUMMARY_ADDED = ("ttft_p999", "queue_p50", "queue_p99", *(f"itl_{n}" for n, _ in ITL_QUANTILES))
ADDED_COLUMNS["summary"] = {name: float("nan") for name in SUMMARY_ADDED}


def summarize(
    requests: pd.DataFrame,
    instances: pd.DataFrame,
    classes: Mapping[str, RequestClassSpec],
    duration_s: float,
    price_per_gpu_hour: Mapping[str, float],
    itl: Mapping[str, LogHistogram] | None = None,
) -> pd.DataFrame:
    """One row per request class (config order, then any class only the data names), then ``all``.

    Per-class columns (the ``all`` row computes them over every request):

    - ``request_class``: the class name, or ``"all"``.
    - ``requests``: arrivals of the class; every arrival ends in exactly one terminal state, so
      ``requests == finished + rejected + unfinished``.
    - ``finished``, ``rejected``, ``unfinished``: arrivals by terminal state (``unfinished``:
      still in the system when the horizon ended).
    - ``slo_met``: requests that finished and met every bound of their class's SLO.
    - ``slo_attainment``: ``slo_met / requests`` — rejected and unfinished requests count as
      misses, so a policy cannot look good by refusing work. NaN for a class with no arrivals.
    - ``{ttft,tpot,e2e}_p{50,90,99}``: percentiles (numpy's default linear interpolation) in
      seconds over *finished* requests whose value is defined (``tpot`` is undefined for
      one-token answers); NaN when there is none.
    - ``{ttft,tpot,e2e}_mean``: the mean over the same requests, NaN when none.
    - ``ttft_p999``: the 99.9th percentile of ``ttft``, like the others.
    - ``queue_p50``, ``queue_p99``: percentiles of ``queue_s`` (arrival to first admission to
      a batch) over finished requests, like the others.
    - ``itl_p{50,90,99,999}``: per-token inter-token latency — every gap between consecutive
      tokens of every request of the class, unfinished ones included — from ``itl``, the
      run's log-bucket histograms per class (:mod:`chironsim.metrics.histogram`; ``all``
      merges them): within 1 % (the histograms' ``alpha``) of the exact order statistic of
      rank ⌊q·(n−1)⌋, i.e. numpy's ``method="lower"``, not the linear interpolation above.
      NaN for a class without gaps, and everywhere when ``itl`` is not given.
    - ``throughput_rps``: finished requests ÷ ``duration_s``.
    - ``output_tokens_per_s``: tokens generated for the class's requests (including partial
      answers of unfinished ones) ÷ ``duration_s``.

    Cluster columns, identical on every row so that any single row is self-contained:

    - ``gpu_hours``: Σ instance ``gpu_seconds`` ÷ 3600 (``gpu_seconds`` already counts every GPU
      of an instance, billed from provisioning to stop).
    - ``cost_usd``: Σ ``gpu_seconds`` ÷ 3600 × ``price_per_gpu_hour[gpu]`` of each instance.
    - ``goodput_tokens_per_gpu_hour``: output tokens of SLO-meeting requests (all classes) ÷
      ``gpu_hours``; NaN when no GPU time was billed.

    Raises :class:`UnknownNameError` when an instance's GPU has no price, and
    :class:`ConfigError` when a class is named ``"all"``.
    """
    if not duration_s > 0:
        raise ValueError(f"duration_s must be positive, got {duration_s!r}")
    if ALL in classes:
        raise ConfigError(f"request class name {ALL!r} is reserved for the summary's total row")

    class_col = requests["request_class"].astype(str)
    data_only = sorted(set(class_col) - set(classes))
    if ALL in data_only:
        raise ConfigError(f"request class name {ALL!r} is reserved for the summary's total row")

    cluster = _cluster_columns(requests, instances, price_per_gpu_hour)
    itl = dict(itl or {})
    rows = [
        {
            "request_class": name,
            **_class_columns(requests[class_col == name], duration_s),
            **cluster,
            **_itl_columns(itl.get(name)),
        }
        for name in [*classes, *data_only]
    ]
    rows.append({"request_class": ALL, **_class_columns(requests, duration_s), **cluster,
                 **_itl_columns(merged(itl.values()) if itl else None)})
    return conform(pd.DataFrame.from_records(rows), SUMMARY_SCHEMA, "summary")


def _class_columns(reqs: pd.DataFrame, duration_s: float) -> dict[str, float | int]:
    status = reqs["status"].astype(str)
    done = reqs[status == FINISHED]
    cols: dict[str, float | int] = {
        "requests": len(reqs),
        "finished": len(done),
        "rejected": int((status == REJECTED).sum()),
        "unfinished": int((status == UNFINISHED).sum()),
        "slo_met": int(reqs["slo_met"].sum()),
    }
    cols["slo_attainment"] = cols["slo_met"] / len(reqs) if len(reqs) else float("nan")
    for metric in LATENCY_METRICS:
        values = done[metric].to_numpy(dtype=float)
        values = values[~np.isnan(values)]
        if len(values):
            pcts = np.percentile(values, PERCENTILES)
            mean = float(values.mean())
        else:
            pcts = [float("nan")] * len(PERCENTILES)
            mean = float("nan")
        for p, v in zip(PERCENTILES, pcts):
            cols[f"{metric}_p{p}"] = float(v)
        cols[f"{metric}_mean"] = mean
    ttft = done["ttft"].to_numpy(dtype=float)
    ttft = ttft[~np.isnan(ttft)]
    cols["ttft_p999"] = float(np.percentile(ttft, 99.9)) if len(ttft) else float("nan")
    queue = done["queue_s"].to_numpy(dtype=float)
    queue = queue[~np.isnan(queue)]
    for p in (50, 99):
        cols[f"queue_p{p}"] = float(np.percentile(queue, p)) if len(queue) else float("nan")
    cols["throughput_rps"] = len(done) / duration_s
    cols["output_tokens_per_s"] = float(reqs["generated_tokens"].sum()) / duration_s
    return cols


def _itl_columns(hist: LogHistogram | None) -> dict[str, float]:
    if hist is None:
        return {f"itl_{name}": float("nan") for name, _ in ITL_QUANTILES}
    return {f"itl_{name}": hist.quantile(q) for name, q in ITL_QUANTILES}


def _cluster_columns(
    requests: pd.DataFrame, instances: pd.DataFrame, price_per_gpu_hour: Mapping[str, float]
) -> dict[str, float]:
    good_tokens = float(requests.loc[requests["slo_met"].astype(bool), "generated_tokens"].sum())
    return _cost_columns(instances, price_per_gpu_hour, good_tokens)


def _cost_columns(instances: pd.DataFrame, price_per_gpu_hour: Mapping[str, float],
                  good_tokens: float) -> dict[str, float]:
    gpus = instances["gpu"].astype(str)
    unpriced = sorted(set(gpus) - set(price_per_gpu_hour))
    if unpriced:
        raise UnknownNameError("GPU price", unpriced[0], list(price_per_gpu_hour))
    hours = instances["gpu_seconds"].to_numpy(dtype=float) / 3600.0
    gpu_hours = float(hours.sum())
    prices = np.array([price_per_gpu_hour[g] for g in gpus], dtype=float)
    cost = float((hours * prices).sum())
    goodput = good_tokens / gpu_hours if gpu_hours > 0 else float("nan")
    return {"gpu_hours": gpu_hours, "cost_usd": cost, "goodput_tokens_per_gpu_hour": goodput}


#: Columns of the requests table the summary reads.
SUMMARY_INPUTS = ("request_class", "status", "slo_met", "generated_tokens", "ttft", "tpot", "e2e",
                  "queue_s")
#: metric -> (percentile arguments as ``_class_columns`` passes them, whether a mean is taken)
_STREAMED = {
    "ttft": ((PERCENTILES, 99.9), True),
    "tpot": ((PERCENTILES,), True),
    "e2e": ((PERCENTILES,), True),
    "queue_s": ((50, 99), False),
}


def summarize_batches(
    batches: Callable[[Sequence[str]], Iterable[Mapping[str, np.ndarray]]],
    instances: pd.DataFrame,
    classes: Mapping[str, RequestClassSpec],
    duration_s: float,
    price_per_gpu_hour: Mapping[str, float],
    itl: Mapping[str, LogHistogram] | None = None,
) -> pd.DataFrame:
    """:func:`summarize` from the requests read as a stream, without holding the table.

    ``batches(columns)`` yields the requests table's rows in its order (request id) as
    batches of numpy columns, and may be called several times (each call reads the rows
    again). Counts and token sums add up exactly; the means and percentiles are numpy's own,
    bit for bit, reproduced from a few passes (:mod:`chironsim.metrics.exact`): the table is
    the one :func:`summarize` gives for the whole requests table."""
    if not duration_s > 0:
        raise ValueError(f"duration_s must be positive, got {duration_s!r}")
    if ALL in classes:
        raise ConfigError(f"request class name {ALL!r} is reserved for the summary's total row")
    counts: dict[str, dict[str, int]] = {}
    good_tokens = 0
    n_values: dict[tuple[str, str], int] = {}

    def groups(batch: Mapping[str, np.ndarray]) -> Iterator[tuple[str, np.ndarray]]:
        names = batch["request_class"].astype(str)
        for name in np.unique(names).tolist():
            yield name, names == name
        yield ALL, np.ones(len(names), dtype=bool)

    def finished_values(batch, mask, metric) -> np.ndarray:
        values = batch[metric][mask & (batch["status"].astype(str) == FINISHED)]
        values = np.asarray(values, dtype=float)
        return values[~np.isnan(values)]

    # pass 1: counts, token sums, and the values' count and top bits per class and metric
    stats: dict[tuple[str, str, int], OrderStatistics] = {}

    def order_stats(name: str, metric: str) -> list[OrderStatistics]:
        found = []
        for i, q in enumerate(_STREAMED[metric][0]):
            key = (name, metric, i)
            if key not in stats:
                stats[key] = OrderStatistics(lambda n, q=q: percentile_ranks(n, q) if n else [])
            found.append(stats[key])
        return found

    for batch in batches(SUMMARY_INPUTS):
        status = batch["status"].astype(str)
        met = batch["slo_met"].astype(bool)
        tokens = batch["generated_tokens"].astype(np.int64)
        good_tokens += int(tokens[met].sum())
        for name, mask in groups(batch):
            c = counts.setdefault(name, {"requests": 0, "finished": 0, "rejected": 0,
                                         "unfinished": 0, "slo_met": 0, "tokens": 0})
            c["requests"] += int(mask.sum())
            c["finished"] += int((mask & (status == FINISHED)).sum())
            c["rejected"] += int((mask & (status == REJECTED)).sum())
            c["unfinished"] += int((mask & (status == UNFINISHED)).sum())
            c["slo_met"] += int(met[mask].sum())
            c["tokens"] += int(tokens[mask].sum())
            for metric in _STREAMED:
                values = finished_values(batch, mask, metric)
                n_values[(name, metric)] = n_values.get((name, metric), 0) + len(values)
                for os_ in order_stats(name, metric):
                    os_.feed(values)
    pending = {key: os_ for key, os_ in stats.items() if not os_.end_pass()}
    sums = {key: PairwiseSum(n) for key, n in n_values.items() if _STREAMED[key[1]][1]}
    # later passes: the means (their tree needs the counts) and the order statistics
    means: dict[tuple[str, str], float] = {}
    while pending or sums:
        for batch in batches(SUMMARY_INPUTS):
            for name, mask in groups(batch):
                for metric in _STREAMED:
                    if (name, metric) not in sums and not any(
                            (name, metric, i) in pending for i in range(len(_STREAMED[metric][0]))):
                        continue
                    values = finished_values(batch, mask, metric)
                    if (name, metric) in sums:
                        sums[(name, metric)].feed(values)
                    for i in range(len(_STREAMED[metric][0])):
                        if (name, metric, i) in pending:
                            pending[(name, metric, i)].feed(values)
        means.update({key: s.mean() if s.n else float("nan") for key, s in sums.items()})
        sums = {}
        pending = {key: os_ for key, os_ in pending.items() if not os_.end_pass()}

    def class_columns(name: str) -> dict[str, float | int]:
        c = counts.get(name, {"requests": 0, "finished": 0, "rejected": 0, "unfinished": 0,
                              "slo_met": 0, "tokens": 0})
        cols: dict[str, float | int] = {k: c[k] for k in
                                        ("requests", "finished", "rejected", "unfinished", "slo_met")}
        cols["slo_attainment"] = c["slo_met"] / c["requests"] if c["requests"] else float("nan")

        def pct(metric: str, i: int):
            n = n_values.get((name, metric), 0)
            q = _STREAMED[metric][0][i]
            return percentile(n, q, stats[(name, metric, i)].values.__getitem__) if n else None

        for metric in LATENCY_METRICS:
            got = pct(metric, 0)
            pcts = got if got is not None else [float("nan")] * len(PERCENTILES)
            for p, v in zip(PERCENTILES, pcts):
                cols[f"{metric}_p{p}"] = float(v)
            cols[f"{metric}_mean"] = means.get((name, metric), float("nan"))
        got = pct("ttft", 1)
        cols["ttft_p999"] = float(got) if got is not None else float("nan")
        for i, p in enumerate((50, 99)):
            got = pct("queue_s", i)
            cols[f"queue_p{p}"] = float(got) if got is not None else float("nan")
        cols["throughput_rps"] = c["finished"] / duration_s
        cols["output_tokens_per_s"] = float(c["tokens"]) / duration_s
        return cols

    data_only = sorted(set(counts) - {ALL} - set(classes))
    if ALL in data_only:
        raise ConfigError(f"request class name {ALL!r} is reserved for the summary's total row")
    cluster = _cost_columns(instances, price_per_gpu_hour, float(good_tokens))
    itl = dict(itl or {})
    rows = [{"request_class": name, **class_columns(name), **cluster, **_itl_columns(itl.get(name))}
            for name in [*classes, *data_only]]
    rows.append({"request_class": ALL, **class_columns(ALL), **cluster,
                 **_itl_columns(merged(itl.values()) if itl else None)})
    return conform(pd.DataFrame.from_records(rows), SUMMARY_SCHEMA, "summary")
