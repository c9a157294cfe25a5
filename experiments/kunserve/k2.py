"""K2: overload (issue 10 item 4). One run through ``chironsim.experiments.runner.run`` per
(workload, hardware, policy, load, seed), and the row of metrics it contributes to ``k2.csv``.

Metrics (REPORT.md says how to read them):

- ``ttft_p{50,90,99,999}``, ``queue_p{50,99}``, ``tpot_p{50,99}``, ``throughput_rps``,
  ``output_tokens_per_s``: the runner's summary (``all`` row; percentiles over finished
  requests, numpy's linear interpolation; throughput over the whole run, drain included).
- ``itl_p{50,90,99,999}``: per-token inter-token latency (TBT), every gap between consecutive
  tokens of every request, from the run's 1 % log-bucket histograms.
- ``fused_share``: the share of instance-seconds spent as members of a fused group (from the
  timeseries' ``fused_members``); ``kv_util_max``: the peak of the timeseries' KV utilisation
  (used ÷ capacity, mean over the ready instances, sampled every second).
- ``tpot_fused_p50`` / ``tpot_unfused_p50`` (KunServe only): the median time per output token
  of the requests whose whole decode (first token to finish) lay inside a fused period of their
  group, and of those whose whole decode lay outside every fused period of their group.
"""

from __future__ import annotations

import math
import re
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import kunserve_setups as scenarios  # noqa: E402

from chironsim.experiments.runner import run  # noqa: E402

#: Loads scanned per (workload, hardware): the trace's rate_scale, or the burst's base rate
#: (req/s). Chosen by a first scan (REPORT.md) to go from no queueing to heavy overload.
LOADS: dict[tuple[str, str], tuple[float, ...]] = {
    ("conv", "7b-a10"): (0.5, 0.75, 1.0, 1.25, 1.5, 2.0),
    ("code", "7b-a10"): (0.5, 1.0, 1.5, 2.0, 3.0),
    ("burst", "7b-a10"): (1.0, 1.5, 2.0, 3.0, 4.0),
    ("conv", "8b-a10"): (1.0, 1.5, 2.0, 3.0, 4.0),
    ("code", "8b-a10"): (1.0, 2.0, 3.0, 4.0, 6.0),
    ("burst", "8b-a10"): (2.0, 3.0, 4.0, 6.0),
    ("conv", "70b-a100"): (1.0, 2.0, 4.0, 8.0),
    ("code", "70b-a100"): (1.0, 2.0, 4.0, 8.0),
    ("burst", "70b-a100"): (4.0, 8.0, 16.0),
    ("long", "70b-a100"): (0.125, 0.25, 0.375, 0.5, 0.75, 1.0),
    ("conv", "8b-a100"): (2.0, 4.0, 8.0, 16.0),
    ("code", "8b-a100"): (2.0, 4.0, 8.0, 16.0),
    ("burst", "8b-a100"): (8.0, 16.0, 32.0),
    ("long", "8b-a100"): (0.125, 0.25, 0.5, 0.75, 1.0, 1.5),
}
#: Finer loads around the knee of the points where KunServe drops (REPORT.md: how large "up to"
#: is depends on how finely the load is scanned). Trace windows are deterministic (the main grid
#: shows every seed gives the same run), so they run on seed 1 only; the burst on every seed.
KNEE_LOADS: dict[tuple[str, str], tuple[float, ...]] = {
    ("conv", "7b-a10"): (0.8, 0.85, 0.9, 0.95, 1.0, 1.05, 1.1, 1.15, 1.2),
    ("conv", "8b-a10"): (1.3, 1.4, 1.5, 1.6, 1.7, 1.8, 1.9, 2.0),
    ("burst", "7b-a10"): (0.6, 0.8, 1.0, 1.2, 1.4, 1.6, 1.8),
    ("burst", "8b-a10"): (2.5, 2.75, 3.0, 3.25, 3.5, 3.75, 4.0, 4.5),
    ("long", "70b-a100"): (0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6),
}
#: KunServe's options (policy: {kind: kunserve, ...}) against its defaults, on two points.
ABLATION: dict[str, dict[str, Any]] = {
    "default": {},
    "all_groups": {"trigger_scope": "all_groups"},
    "blocking_exchange": {"stale_requests": "blocking_exchange"},
    "recompute": {"stale_requests": "recompute"},
    "no_restore": {"restore": False},
}
ABLATION_POINTS = (("conv", "7b-a10"), ("burst", "8b-a10"))
WORKLOADS = ("conv", "code", "burst", "long")
POLICIES = tuple(scenarios.POLICIES)


def jobs(loads=None, seeds=scenarios.SEEDS, policies=POLICIES) -> list[tuple[dict, dict]]:
    out = []
    for (workload, hardware), values in (loads or LOADS).items():
        for load in values:
            for seed in seeds:
                for policy in policies:
                    tags = {"workload": workload, "hardware": hardware, "policy": policy,
                            "load": load, "seed": seed}
                    out.append((tags, scenarios.k2_scenario(workload, hardware, policy, load, seed)))
    return out


def knee_jobs(loads=None, seeds=scenarios.SEEDS, policies=POLICIES) -> list[tuple[dict, dict]]:
    out = []
    for (workload, hardware), values in (loads or KNEE_LOADS).items():
        for load in values:
            for seed in (seeds if workload == "burst" else seeds[:1]):
                for policy in policies:
                    tags = {"workload": workload, "hardware": hardware, "policy": policy,
                            "load": load, "seed": seed}
                    out.append((tags, scenarios.k2_scenario(workload, hardware, policy, load, seed)))
    return out


def ablation_jobs(points=ABLATION_POINTS, variants=None, seeds=scenarios.SEEDS) -> list[tuple[dict, dict]]:
    out = []
    for workload, hardware in points:
        for load in LOADS[(workload, hardware)]:
            for seed in (seeds if workload == "burst" else seeds[:1]):
                for variant, overrides in (variants or ABLATION).items():
                    tags = {"workload": workload, "hardware": hardware, "policy": "kunserve",
                            "variant": variant, "load": load, "seed": seed}
                    out.append((tags, scenarios.k2_scenario(workload, hardware, "kunserve", load, seed,
                                                            overrides, variant)))
    return out


def _fused_intervals(events: pd.DataFrame, end: float) -> dict[str, list[tuple[float, float]]]:
    """Per leader id: [drop, split) intervals (open ones end at ``end``)."""
    out: dict[str, list[tuple[float, float]]] = {}
    opened: dict[str, float] = {}
    for _, e in events[events.kind.isin(["drop", "split"])].sort_values("time", kind="stable").iterrows():
        if e.kind == "drop":
            opened[e.instance_id] = e.time
        elif e.instance_id in opened:
            out.setdefault(e.instance_id, []).append((opened.pop(e.instance_id), e.time))
    for leader, t in opened.items():
        out.setdefault(leader, []).append((t, end))
    return out


def _static_leader(instance_id: str, g: int = 2) -> str:
    """KunServe's static groups: consecutive instances in creation order, g each."""
    pool, k = instance_id.rsplit("-", 1)
    return f"{pool}-{int(k) // g * g}"


def _last_instance(value: Any) -> str | None:
    if isinstance(value, str):
        ids = re.findall(r"[\w.]+-\d+", value)
        return ids[-1] if ids else None
    try:
        return list(value)[-1]
    except (TypeError, IndexError):
        return None


def fused_tpot(requests: pd.DataFrame, events: pd.DataFrame, end: float) -> tuple[float, float, int, int]:
    """(median TPOT decoded inside a fused period, outside any, counts) of finished requests."""
    intervals = _fused_intervals(events, end)
    inside, outside = [], []
    done = requests[(requests.status == "finished") & requests.tpot.notna()]
    for r in done.itertuples():
        inst = _last_instance(r.instances)
        if inst is None:
            continue
        spans = intervals.get(_static_leader(inst), [])
        a, b = r.first_token_time, r.finish_time
        if any(lo <= a and b <= hi for lo, hi in spans):
            inside.append(r.tpot)
        elif not any(a < hi and lo < b for lo, hi in spans):
            outside.append(r.tpot)
    med = lambda xs: float(np.median(xs)) if xs else math.nan  # noqa: E731
    return med(inside), med(outside), len(inside), len(outside)


SUMMARY_COLUMNS = ("requests", "finished", "rejected", "unfinished", "ttft_p50", "ttft_p90", "ttft_p99",
                   "ttft_p999", "ttft_mean", "tpot_p50", "tpot_p99", "queue_p50", "queue_p99", "itl_p50",
                   "itl_p90", "itl_p99", "itl_p999", "e2e_p99", "throughput_rps", "output_tokens_per_s",
                   "gpu_hours")


def metrics(result) -> dict[str, Any]:
    s = result.summary
    s = s[s.request_class == "all"].iloc[0]
    row: dict[str, Any] = {c: (float(s[c]) if c not in ("requests", "finished", "rejected", "unfinished")
                               else int(s[c])) for c in SUMMARY_COLUMNS}
    ev, req, ts = result.events, result.requests, result.timeseries
    kinds = ev.kind.value_counts() if len(ev) else pd.Series(dtype=int)
    for kind in ("preempt", "swap_out", "migrate_done", "drop", "split", "exchange"):
        row[kind if kind != "migrate_done" else "migrations"] = int(kinds.get(kind, 0))
    # every member (leader included) counts in fused_members; the pool never changes size here
    instances = result.manifest["config"]["cluster"]["pools"]["default"]["instances"]
    row["fused_share"] = float(ts.fused_members.sum() / (len(ts) * instances)) if len(ts) else 0.0
    # KV used ÷ capacity, averaged over the ready instances at each sample (a fused group's
    # leader reports the pooled capacity): its peak says whether memory ever bound
    row["kv_util_max"] = float(ts.kv_utilization.max()) if len(ts) else math.nan
    end = float(result.manifest["sim_end_s"])
    inside, outside, n_in, n_out = fused_tpot(req, ev, end)
    row.update({"tpot_fused_p50": inside, "tpot_unfused_p50": outside, "n_fused_decodes": n_in,
                "n_unfused_decodes": n_out, "prompt_mean": float(req.prompt_tokens.mean()),
                "output_mean": float(req.output_tokens.mean()), "sim_end_s": end})
    return row


def run_point(tags: dict[str, Any], cfg: dict[str, Any]) -> dict[str, Any]:
    started = time.perf_counter()
    result = run(cfg, HERE)
    row = {**tags, **metrics(result)}
    row["wall_s"] = time.perf_counter() - started
    return row
