"""Reproduce the Chiron experiment: size the static baseline, run every policy x load x seed,
aggregate, and draw the figures.

    .venv/bin/python experiments/chiron/run.py                # everything (about 20 min on 2 cores)
    .venv/bin/python experiments/chiron/run.py --stage size   # only the static sizing
    .venv/bin/python experiments/chiron/run.py --stage runs --workers 2
    .venv/bin/python experiments/chiron/run.py --stage aggregate
    .venv/bin/python experiments/chiron/run.py --model 70b  # the smaller Llama-3.1-70B study

Raw run folders go to ``experiments/chiron/results/`` (git-ignored); the small aggregated CSVs
go to ``experiments/chiron/`` and the PNGs to ``experiments/chiron/figures/``. The scenario
(``configs/base_8b.yaml``) is the Chiron layout; the baselines are derived from it here so that
every policy sees the same workload and seeds. ``--model 70b`` runs the same study on
``configs/base_70b.yaml`` (fewer loads and policies) and adds ``_70b`` to every output name
(``results_70b/``, ``runs_70b.csv``, ``figures/70b_*.png``). Why each choice was made: REPORT.md.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

HERE = Path(__file__).resolve().parent
CONFIGS = HERE / "configs"
FIGURES = HERE / "figures"

#: Load multipliers of the interactive traffic (trace rate_scale and the burst's rate).
LOADS = {"1x": 1.0, "2x": 2.0, "4x": 4.0}
SEEDS = (1, 2, 3)
#: Mean rate of the Azure 2023 conversation trace (DERIVED_trace_stats.json: 5.53 req/s); the
#: burst runs at 1.5x it, scaled with the load.
TRACE_RATE = 5.53
#: First to last arrival of that trace (DERIVED_trace_stats.json: 3501.7 s).
TRACE_SPAN_S = 3501.7
SPIKE_FACTOR = 1.5
#: Interactive SLO target of the static sizing: attainment a peak-provisioned deployment must
#: reach with interactive traffic alone.
STATIC_TARGET = 0.99
#: Engine of the static and reactive interactive pools: a latency-tuned vLLM deployment (64
#: seats), which also makes the seat-utilisation metric of the reactive autoscaler meaningful.
BASELINE_INTERACTIVE_ENGINE = {"max_num_seqs": 64, "max_num_batched_tokens": 2048}
#: Llumnix baselines (issue 9 item 10): the Chiron paper compares against Llumnix "tuned and
#: untuned" without saying what was tuned (reference/chiron.md section 5).
LLUMNIX_POLICIES = ("llumnix", "llumnix-tuned")
POLICIES = ("chiron", "chiron-bmin1", "chiron-bmin64", "chiron-bmin64-itlbp", "chiron-pure-itl",
            "chiron-no-local", "chiron-no-global", "chiron-no-global-no-local", "chiron-no-mixed",
            "static", "reactive", *LLUMNIX_POLICIES)
#: The tuning grid of llumnix-tuned: what an operator of Llumnix's released code can set for
#: this workload — its dispatch policy (freeness from the last poll, or round-robin: the code
#: has both) and the pool's instance cap, as a share of the GPU budget. Its scaling thresholds
#: are not in the grid: while the batch job queues, the pooled freeness is far below any
#: non-negative threshold, so they only decide when the idle tail is drained. "llumnix-full" is the
#: released code's default (the ``llumnix`` policy).
LLUMNIX_DISPATCH = {"llumnix": "llumnix", "rr": "round_robin"}
LLUMNIX_CAP_SHARES = {"full": 1.0, "half": 0.5, "quarter": 0.25}
LLUMNIX_GRID = tuple(f"{d}-{c}" for d in LLUMNIX_DISPATCH for c in LLUMNIX_CAP_SHARES)
#: The seed the tuning runs on (tuned per load: the best case for the baseline).
TUNING_SEED = 1
#: b_min of the chiron-bmin64 variant: a higher floor for the local autoscaler (before the fix
#: of its ratchet, see REPORT.md "Bugs", it kept instances from being parked at 16 seats).
BMIN_VARIANT = 64
#: The policy's own default b_min, for the chiron-bmin1 variant: does the scenario still need
#: the b_min 16 workaround now that the limit is probed upward again after a halving?
BMIN_DEFAULT = 1
#: The 70B variant chiron-cold250 is Chiron told the measured time from provisioning to ready
#: of a 70B instance under concurrent loads (means of 190-240 s per run for Chiron's launches,
#: REPORT.md; rounded up) instead of the 120 s of one load alone: as its batch bound's cold_start_s, and as its interactive
#: scale_down_delay (keep capacity at least as long as it takes to get it back).
COLD_START_MEASURED_70B = 250.0


@dataclass(frozen=True)
class Study:
    """One model's study: its base config, what it runs, and where its outputs go (the 8B study
    keeps the original names; another model's add ``_<model>``, so both live side by side)."""

    model: str
    loads: dict[str, float]
    policies: tuple[str, ...]
    #: load of the over-time figures
    timeseries_load: str
    #: max instances of the static/reactive interactive and batch pools (together at most the
    #: GPU budget, like Chiron's pools)
    baseline_caps: tuple[int, int]

    @property
    def suffix(self) -> str:
        return "" if self.model == "8b" else f"_{self.model}"

    @property
    def base(self) -> Path:
        return CONFIGS / f"base_{self.model}.yaml"

    @property
    def results(self) -> Path:
        return HERE / f"results{self.suffix}"

    def table(self, stem: str, ext: str) -> Path:
        return HERE / f"{stem}{self.suffix}.{ext}"

    def figure(self, name: str) -> Path:
        return FIGURES / (f"{self.model}_{name}" if self.suffix else name)


#: The 70B study: loads up to 1x (static-for-peak needs 48 of the 50 GPUs at 1x, so 2x does not
#: fit the budget), full Chiron, the b_min 64 variants, its ablations, Chiron told the measured
#: cold start, and the two baselines. Its baseline caps follow Chiron's split (base_70b.yaml:
#: interactive 6 + mixed 2, batch 4 TP-4 instances, 48 GPUs): interactive 8, batch 4.
STUDIES = {
    "8b": Study("8b", LOADS, POLICIES, "2x", (25, 25)),
    "70b": Study("70b", {"0.5x": 0.5, "0.75x": 0.75, "1x": 1.0},
                 ("chiron", "chiron-bmin64", "chiron-bmin64-itlbp", "chiron-no-local",
                  "chiron-no-global", "chiron-no-global-no-local", "chiron-no-mixed",
                  "chiron-cold250", "static", "reactive", *LLUMNIX_POLICIES),
                 "1x", (8, 4)),
}


def load_base(study: Study) -> dict[str, Any]:
    return yaml.safe_load(study.base.read_text())


def _tp(cfg: dict[str, Any]) -> int:
    """GPUs per instance: the baselines use the same tensor-parallel degree as Chiron's pools."""
    return cfg["cluster"]["pools"]["interactive"].get("tp", 1)


def with_load(cfg: dict[str, Any], load: float) -> dict[str, Any]:
    """Load L: the trace replayed L times faster (``rate_scale``), tiled L times back to back so
    that every load fills the same one-hour window (L trace streams, the k-th starting at
    k/L of the hour). A load L < 1 replays the trace's first L share (``time_window``) slowed
    to fill the hour: the same arrival process at L times the rate, its fluctuations
    stretched by 1/L. The burst's rate scales with L too."""
    cfg = copy.deepcopy(cfg)
    streams = cfg["workload"]["streams"]
    trace, rest = streams[0], streams[1:]
    rest[0]["arrival"]["spike_rate"] = round(SPIKE_FACTOR * TRACE_RATE * load, 4)
    if 0 < load < 1:
        trace["time_window"] = [0.0, round(load * TRACE_SPAN_S, 6)]
        trace["rate_scale"] = round(load * TRACE_SPAN_S / cfg["duration_s"], 6)
        return cfg
    copies = round(load)
    if copies != load or copies < 1:
        raise ValueError(f"loads must be below 1 or whole multiples of the trace, got {load}")
    slot = cfg["duration_s"] / copies
    tiles = []
    for k in range(copies):
        tile = copy.deepcopy(trace)
        # the trace spans TRACE_SPAN_S < the window: stretch it to fill its slot exactly
        tile["rate_scale"] = round(TRACE_SPAN_S / slot, 6)
        tile["start"] = round(k * slot, 6)
        tiles.append(tile)
    cfg["workload"]["streams"] = tiles + rest
    return cfg


def baseline_pools(n_interactive: int, n_batch: int, caps: tuple[int, int],
                   tp: int) -> dict[str, Any]:
    """Two pools, one per class: the static/reactive layout (no global queue, no mixed)."""
    return {
        "interactive": {"instances": n_interactive, "tp": tp, "classes": ["interactive"],
                        "max_instances": caps[0], "engine": BASELINE_INTERACTIVE_ENGINE},
        "batch": {"instances": n_batch, "tp": tp, "classes": ["batch"], "max_instances": caps[1]},
    }


def llumnix_pool(cfg: dict[str, Any], tp: int, cap_share: float = 1.0) -> dict[str, Any]:
    """Llumnix's layout: one pool serving both classes (class priorities tell them apart),
    starting with as many instances as Chiron's pools hold at t = 0, capped at ``cap_share`` of
    the GPU budget that Chiron's pool caps add up to. The engine is the base config's (256
    seats, as Chiron's pools start with: Llumnix has no batch-size controller)."""
    pools = cfg["cluster"]["pools"]
    start = sum(p.get("instances", 0) for p in pools.values())
    budget = sum(p.get("max_instances", p.get("instances", 0)) for p in pools.values())
    cap = max(start, math.floor(budget * cap_share))
    return {"serving": {"instances": start, "tp": tp, "min_instances": 1, "max_instances": cap}}


def llumnix_point(cfg: dict[str, Any], tp: int, point: str) -> None:
    """Make ``cfg`` (a copy of the base scenario) run Llumnix at tuning-grid ``point``:
    the released code's defaults (scale up below freeness 10, drain above 60, every 10 s,
    0.05 s polls, migration on, no priority headroom; interactive priority 0 is Llumnix's
    high priority) with the point's dispatch and instance cap."""
    dispatch, share = point.split("-", 1)
    cfg["cluster"]["pools"] = llumnix_pool(cfg, tp, LLUMNIX_CAP_SHARES[share])
    cfg["policy"] = {"kind": "llumnix", "dispatch": LLUMNIX_DISPATCH[dispatch]}


def _label(study: Study, load: float) -> str:
    return next(label for label, value in study.loads.items() if value == load)


def tuned_point(study: Study, label: str) -> str:
    """The grid point :func:`tune_llumnix` chose for this load."""
    return json.loads(study.table("llumnix_tuning", "json").read_text())[label]


def scenario(study: Study, policy: str, load: float, seed: int,
             sizing: dict[str, int]) -> dict[str, Any]:
    """The config of one run. ``sizing``: static's interactive count at this load and batch
    count (from :func:`size_static`)."""
    cfg = with_load(load_base(study), load)
    caps, tp = study.baseline_caps, _tp(cfg)
    cfg["seed"] = seed
    cfg["name"] = f"{policy}-{load:g}x-s{seed}"
    chiron = cfg["policy"]
    if policy == "chiron":
        pass
    elif policy == "chiron-bmin1":
        chiron["b_min"] = BMIN_DEFAULT
    elif policy == "chiron-bmin64":
        chiron["b_min"] = BMIN_VARIANT
    elif policy == "chiron-pure-itl":
        chiron["itl_signal"] = "pure_decode"
    elif policy == "chiron-bmin64-itlbp":
        chiron["b_min"] = BMIN_VARIANT
        chiron["itl_backpressure"] = True
    elif policy == "chiron-cold250":
        chiron["cold_start_s"] = COLD_START_MEASURED_70B
        chiron["scale_down_delay"] = COLD_START_MEASURED_70B
    elif policy == "chiron-no-local":
        chiron["local"] = False
    elif policy in ("chiron-no-global", "chiron-no-global-no-local"):
        # Nothing scales: static's peak provisioning, one of its interactive instances made
        # the mixed one, so the GPU count is static's (and within the budget). Without the
        # local autoscaler too, what is left of Chiron is its routing, the mixed pool and the
        # global batch queue: the pair isolates what the local loop does.
        chiron["global_scaling"] = False
        chiron["local"] = policy == "chiron-no-global"
        pools = cfg["cluster"]["pools"]
        fixed = {"interactive": sizing["interactive"] - 1, "mixed": 1, "batch": sizing["batch"]}
        for name, count in fixed.items():
            pools[name]["instances"] = count
            pools[name]["max_instances"] = max(pools[name].get("max_instances", count), count)
    elif policy == "chiron-no-mixed":
        chiron["mixed"] = False
        cfg["cluster"]["pools"]["mixed"]["instances"] = 0
    elif policy == "static":
        cfg["cluster"]["pools"] = baseline_pools(sizing["interactive"], sizing["batch"], caps, tp)
        cfg["policy"] = {"kind": "static", "router": {"kind": "least_outstanding"}}
    elif policy == "llumnix":
        llumnix_point(cfg, tp, "llumnix-full")
    elif policy == "llumnix-tuned":
        llumnix_point(cfg, tp, tuned_point(study, _label(study, load)))
    elif policy == "reactive":
        cfg["cluster"]["pools"] = baseline_pools(2, 1, caps, tp)
        cfg["policy"] = {"kind": "reactive", "metric": "utilization", "target": 0.6,
                         "tolerance": 0.1, "interval_s": 15, "scale_up_stabilization_s": 0,
                         "scale_down_stabilization_s": 300, "cooldown_s": 60,
                         "min_instances": 1, "max_instances": max(caps),
                         "router": {"kind": "least_outstanding"}}
    else:
        raise ValueError(f"unknown policy {policy!r}")
    return cfg


def _run(cfg: dict[str, Any], out: Path | None) -> pd.DataFrame:
    """One simulation; returns its summary with the run's labels (and saves its tables)."""
    from chironsim.experiments.runner import run

    result = run(cfg, base_dir=CONFIGS)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        for name in ("requests", "summary", "timeseries", "events", "instances"):
            getattr(result, name).to_parquet(out / f"{name}.parquet")
        (out / "wall_s.txt").write_text(f"{result.manifest['wall_seconds']:.1f}\n")
    return result.summary


# ----------------------------------------------------------------------------- static sizing


def _interactive_only(study: Study, load: float, n: int) -> dict[str, Any]:
    cfg = with_load(load_base(study), load)
    cfg["workload"]["streams"] = [s for s in cfg["workload"]["streams"] if s["kind"] != "batch"]
    cfg["classes"].pop("batch")
    cfg["cluster"]["pools"] = {"interactive": {"instances": n, "tp": _tp(cfg),
                                               "classes": ["interactive"],
                                               "engine": BASELINE_INTERACTIVE_ENGINE}}
    cfg["policy"] = {"kind": "static", "router": {"kind": "least_outstanding"}}
    cfg["drain_s"] = 300
    return cfg


def _batch_only(study: Study, n: int) -> dict[str, Any]:
    cfg = load_base(study)
    cfg["workload"]["streams"] = [s for s in cfg["workload"]["streams"] if s["kind"] == "batch"]
    cfg["classes"].pop("interactive")
    cfg["cluster"]["pools"] = {"batch": {"instances": n, "tp": _tp(cfg), "classes": ["batch"]}}
    cfg["policy"] = {"kind": "static", "router": {"kind": "least_outstanding"}}
    return cfg


def _attainment(summary: pd.DataFrame, cls: str) -> float:
    return float(summary.set_index("request_class").loc[cls, "slo_attainment"])


def _check_cap(study: Study, what: str, n: int, cap: int) -> None:
    """A baseline that misses its target at the pool's cap cannot be sized within the budget."""
    if n >= cap:
        raise RuntimeError(f"{study.model} static sizing: {what} misses its target with {cap} "
                           "instances, the pool's cap (the GPU budget)")


def size_static(study: Study) -> dict[str, int]:
    """Smallest interactive count meeting STATIC_TARGET alone at each load (burst included),
    and smallest batch count that finishes the whole batch job by its deadline (seed 1)."""
    sizing: dict[str, int] = {}
    rows = []
    n = 1
    for label, load in study.loads.items():
        while True:
            att = _attainment(_run(_interactive_only(study, load, n), None), "interactive")
            rows.append({"what": f"interactive@{label}", "instances": n, "attainment": att})
            print(f"  sizing interactive@{label}: {n} instances -> {att:.4f}", flush=True)
            if att >= STATIC_TARGET:
                break
            _check_cap(study, f"interactive@{label}", n, study.baseline_caps[0])
            n += 1
        sizing[f"interactive@{label}"] = n
    n = 1
    while True:
        att = _attainment(_run(_batch_only(study, n), None), "batch")
        rows.append({"what": "batch", "instances": n, "attainment": att})
        print(f"  sizing batch: {n} instances -> {att:.4f}", flush=True)
        if att >= 1.0:
            break
        _check_cap(study, "batch", n, study.baseline_caps[1])
        n += 1
    sizing["batch"] = n
    pd.DataFrame(rows).to_csv(study.table("static_sizing", "csv"), index=False)
    study.table("static_sizing", "json").write_text(json.dumps(sizing, indent=1) + "\n")
    return sizing


# ----------------------------------------------------------------------------- Llumnix tuning

#: What llumnix-tuned must reach to be chosen on GPU-hours: the Chiron e2e test's interactive
#: bar and the whole batch job by its deadline.
TUNING_TARGETS = {"interactive": 0.95, "batch": 0.99}


def tuning_scenario(study: Study, label: str, point: str) -> dict[str, Any]:
    """The config of one tuning run: Llumnix at grid ``point``, load ``label``, TUNING_SEED."""
    cfg = with_load(load_base(study), study.loads[label])
    cfg["seed"] = TUNING_SEED
    cfg["name"] = f"tune-{point}-{label}-s{TUNING_SEED}"
    llumnix_point(cfg, _tp(cfg), point)
    return cfg


def _tune_job(args: tuple[Study, str, str]) -> dict[str, Any]:
    study, label, point = args
    out = study.results / "tuning" / f"{point}_{label}_s{TUNING_SEED}"
    if (out / "summary.parquet").exists():
        summary = pd.read_parquet(out / "summary.parquet")
    else:
        summary = _run(tuning_scenario(study, label, point), out)
        print(f"  tuned {out.name} ({(out / 'wall_s.txt').read_text().strip()} s)", flush=True)
    by_class = summary.set_index("request_class")
    return {"load": label, "point": point,
            "slo_interactive": by_class.loc["interactive", "slo_attainment"],
            "slo_batch": by_class.loc["batch", "slo_attainment"],
            "gpu_hours": by_class.loc["all", "gpu_hours"],
            "goodput_per_gpu_hour": by_class.loc["all", "goodput_tokens_per_gpu_hour"]}


def choose_point(rows: pd.DataFrame) -> str:
    """Among the points meeting both targets the one with the fewest GPU-hours; if none does,
    the one with the most goodput (SLO-meeting tokens of both classes) per GPU-hour."""
    ok = rows[(rows.slo_interactive >= TUNING_TARGETS["interactive"])
              & (rows.slo_batch >= TUNING_TARGETS["batch"])]
    if len(ok):
        return str(ok.sort_values(["gpu_hours", "point"]).point.iloc[0])
    return str(rows.sort_values(["goodput_per_gpu_hour", "point"],
                                ascending=[False, True]).point.iloc[0])


def tune_llumnix(study: Study, workers: int) -> dict[str, str]:
    """Run every grid point at every load (seed TUNING_SEED) and choose one per load: the
    tuned baseline is tuned for each load, the best case for it. Writes llumnix_tuning*.csv
    (every point) and .json (the choice per load)."""
    jobs = [(study, label, point) for label in study.loads for point in LLUMNIX_GRID]
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            rows = pd.DataFrame(list(pool.map(_tune_job, jobs)))
    else:
        rows = pd.DataFrame([_tune_job(j) for j in jobs])
    chosen = {label: choose_point(grp) for label, grp in rows.groupby("load", sort=False)}
    rows["chosen"] = [chosen[lbl] == pt for lbl, pt in zip(rows.load, rows.point)]
    rows.to_csv(study.table("llumnix_tuning", "csv"), index=False, float_format="%.6g")
    study.table("llumnix_tuning", "json").write_text(json.dumps(chosen, indent=1) + "\n")
    return chosen


# ----------------------------------------------------------------------------- runs


def _job(args: tuple[Study, str, str, int, dict[str, int]]) -> pd.DataFrame:
    study, policy, label, seed, sizing = args
    load = study.loads[label]
    size = {"interactive": sizing[f"interactive@{label}"], "batch": sizing["batch"]}
    out = study.results / f"{policy}_{label}_s{seed}"
    if (out / "summary.parquet").exists():
        summary = pd.read_parquet(out / "summary.parquet")
    elif (out / "error.txt").exists():
        return pd.DataFrame()
    else:
        try:
            summary = _run(scenario(study, policy, load, seed, size), out)
        except Exception as exc:  # noqa: BLE001 - a simulator crash must not lose the other runs
            # Recorded and left out of the tables (REPORT.md says which run and why), so that
            # one crashing run does not abort the 47 others; delete error.txt to retry it.
            out.mkdir(parents=True, exist_ok=True)
            (out / "error.txt").write_text(f"{type(exc).__name__}: {exc}\n")
            print(f"  FAILED {out.name}: {type(exc).__name__}: {exc}", flush=True)
            return pd.DataFrame()
        print(f"  done {out.name} ({(out / 'wall_s.txt').read_text().strip()} s)", flush=True)
    instances = pd.read_parquet(out / "instances.parquet")
    started = instances[instances.provision_time > 0]
    extra = {"cold_starts": len(started), **_interactive_misses(study, out)}
    for pool_name, seconds in instances.groupby("pool").gpu_seconds.sum().items():
        extra[f"gpu_hours_{pool_name}"] = seconds / 3600
    return summary.assign(policy=policy, load=label, seed=seed, **extra)


def _interactive_misses(study: Study, out: Path) -> dict[str, int]:
    """Why interactive requests missed: TTFT over its bound (or no first token at all) and
    mean TPOT over its bound; a request can miss both."""
    slo = load_base(study)["classes"]["interactive"]["slo"]
    req = pd.read_parquet(out / "requests.parquet",
                          columns=["request_class", "ttft", "tpot", "slo_met"])
    missed = req[(req.request_class == "interactive") & ~req.slo_met]
    return {"interactive_misses": len(missed),
            "interactive_miss_ttft": int((missed.ttft.isna() | (missed.ttft > slo["ttft"])).sum()),
            "interactive_miss_tpot": int((missed.tpot > slo["tpot"]).sum())}


def run_all(study: Study, sizing: dict[str, int], workers: int) -> pd.DataFrame:
    jobs = [(study, p, label, s, sizing) for label in study.loads for s in SEEDS
            for p in study.policies]
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            frames = list(pool.map(_job, jobs))
    else:
        frames = [_job(j) for j in jobs]
    table = pd.concat(frames, ignore_index=True)
    table.to_csv(study.table("runs", "csv"), index=False)
    return table


# ----------------------------------------------------------------------------- aggregation


def _ci(values: pd.Series) -> float:
    """Half-width of the 95 % Student-t interval of the mean over seeds."""
    from scipy import stats

    n = values.count()
    if n < 2:
        return float("nan")
    return float(stats.t.ppf(0.975, n - 1) * values.std(ddof=1) / math.sqrt(n))


def aggregate(study: Study, table: pd.DataFrame) -> pd.DataFrame:
    wide = table.pivot_table(index=["policy", "load", "seed"], columns="request_class",
                             values=["slo_attainment", "ttft_p99", "gpu_hours",
                                     "goodput_tokens_per_gpu_hour", "unfinished"],
                             aggfunc="first")
    wide.columns = [f"{m}_{c}" for m, c in wide.columns]
    wide = wide.reset_index()
    per_run = table.drop_duplicates(["policy", "load", "seed"]).set_index(
        ["policy", "load", "seed"])[["cold_starts", "interactive_miss_ttft",
                                     "interactive_miss_tpot"]]
    wide = wide.join(per_run, on=["policy", "load", "seed"])
    metrics = {
        "slo_interactive": "slo_attainment_interactive",
        "slo_batch": "slo_attainment_batch",
        "ttft_p99_interactive": "ttft_p99_interactive",
        "gpu_hours": "gpu_hours_all",
        "goodput_per_gpu_hour": "goodput_tokens_per_gpu_hour_all",
        "batch_unfinished": "unfinished_batch",
        "cold_starts": "cold_starts",
        "interactive_miss_ttft": "interactive_miss_ttft",
        "interactive_miss_tpot": "interactive_miss_tpot",
    }
    rows = []
    for (policy, load), grp in wide.groupby(["policy", "load"]):
        row: dict[str, Any] = {"policy": policy, "load": load, "seeds": len(grp)}
        for name, col in metrics.items():
            row[name] = grp[col].mean()
            row[f"{name}_ci95"] = _ci(grp[col])
        rows.append(row)
    agg = pd.DataFrame(rows)
    order = {p: i for i, p in enumerate(study.policies)}
    agg = agg.sort_values(["load", "policy"], key=lambda s: s.map(order) if s.name == "policy"
                          else s).reset_index(drop=True)
    agg.to_csv(study.table("aggregate", "csv"), index=False, float_format="%.6g")
    return agg


def figures(study: Study, agg: pd.DataFrame, seed: int = 1) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    FIGURES.mkdir(exist_ok=True)
    loads, policies = list(study.loads), study.policies
    load_for_timeseries = study.timeseries_load
    width = 0.8 / len(policies)
    for metric, title, fname in (
        ("slo_interactive", "Interactive SLO attainment", "slo_interactive.png"),
        ("slo_batch", "Batch deadline attainment", "slo_batch.png"),
        ("gpu_hours", "GPU-hours", "gpu_hours.png"),
        ("goodput_per_gpu_hour", "Goodput (SLO-meeting output tokens) per GPU-hour",
         "goodput_per_gpu_hour.png"),
    ):
        fig, ax = plt.subplots(figsize=(9, 4.6))
        colors = plt.get_cmap("tab20").colors
        for k, policy in enumerate(policies):
            sub = agg[agg.policy == policy].set_index("load").reindex(loads)
            x = np.arange(len(loads)) + (k - len(policies) / 2 + 0.5) * width
            ax.bar(x, sub[metric], width, yerr=sub[f"{metric}_ci95"].fillna(0), label=policy,
                   capsize=2, color=colors[(2 * k) % 20 + (2 * k) // 20])
        ax.set_xticks(np.arange(len(loads)), [f"load {lbl}" for lbl in loads])
        ax.set_title(title)
        if metric.startswith("slo"):
            ax.set_ylim(0, 1.05)
        ax.legend(fontsize=7, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.08))
        fig.tight_layout()
        fig.savefig(study.figure(fname), dpi=110)
        plt.close(fig)

    # instances over time per pool: chiron, the reactive autoscaler and Llumnix's scaler
    shown = ("chiron", "reactive", "llumnix", "llumnix-tuned")
    fig, axes = plt.subplots(1, len(shown), figsize=(5.2 * len(shown), 3.8), sharey=True)
    for ax, policy in zip(axes, shown):
        ts = pd.read_parquet(study.results / f"{policy}_{load_for_timeseries}_s{seed}" /
                             "timeseries.parquet")
        ts = ts.assign(active=ts.provisioning + ts.loading + ts.ready + ts.draining)
        for pool, grp in ts.groupby("pool"):
            ax.plot(grp.time / 60, grp.active, label=pool)
        total = ts.groupby("time").active.sum()
        ax.plot(total.index / 60, total.values, "k--", lw=1, label="total")
        ax.set_title(f"{policy}, load {load_for_timeseries}, seed {seed}")
        ax.set_xlabel("time (min)")
        ax.legend(fontsize=8)
    axes[0].set_ylabel("instances (incl. starting)")
    fig.tight_layout()
    fig.savefig(study.figure("instances_over_time.png"), dpi=110)
    plt.close(fig)

    # local autoscaler at work: mean max_num_seqs per pool over time (chiron)
    ts = pd.read_parquet(study.results / f"chiron_{load_for_timeseries}_s{seed}" /
                         "timeseries.parquet")
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for pool, grp in ts.groupby("pool"):
        ax.plot(grp.time / 60, grp.max_num_seqs, label=pool)
    ax.set_yscale("log", base=2)
    ax.set_xlabel("time (min)")
    ax.set_ylabel("mean max_num_seqs of ready instances")
    ax.set_title(f"Chiron local autoscaler, load {load_for_timeseries}, seed {seed}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(study.figure("max_num_seqs_over_time.png"), dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", choices=("all", "size", "tune", "runs", "aggregate"),
                        default="all")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--model", choices=tuple(STUDIES), default="8b",
                        help="which study: configs/base_<model>.yaml and its own output names")
    args = parser.parse_args()
    study = STUDIES[args.model]
    study.results.mkdir(exist_ok=True)
    sizing_file = study.table("static_sizing", "json")
    if args.stage in ("all", "size") or not sizing_file.exists():
        print("sizing the static baseline", flush=True)
        sizing = size_static(study)
    else:
        sizing = json.loads(sizing_file.read_text())
    print("static sizing:", sizing, flush=True)
    if args.stage == "size":
        return
    tuning_file = study.table("llumnix_tuning", "json")
    if args.stage in ("all", "tune") or not tuning_file.exists():
        print("tuning the Llumnix baseline", flush=True)
        print("llumnix-tuned:", tune_llumnix(study, args.workers), flush=True)
    if args.stage == "tune":
        return
    if args.stage in ("all", "runs"):
        table = run_all(study, sizing, args.workers)
    else:
        table = pd.read_csv(study.table("runs", "csv"))
    agg = aggregate(study, table)
    figures(study, agg)
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print(agg.to_string(index=False, float_format=lambda v: f"{v:.4g}"))


if __name__ == "__main__":
    main()
