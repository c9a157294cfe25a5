"""L2 (serving), L3 (priorities) and L4 (scaling) of the Llumnix experiment (issue 9 item 9):
the scenarios, the four policies, one run through chironsim's runner, and the row of metrics
each run contributes to ``l2.csv`` / ``l3.csv`` / ``l4.csv``.

Every run is a plain scenario config built here and run by :func:`simulate`, which is
``chironsim.experiments.runner.run`` with one addition: a read-only :class:`FragmentationProbe`
that samples the instances' load reports (the same ``LoadReport`` Llumnix's own poller reads)
to measure fragmentation. The probe returns no action; the test checks that a run with it and
a run without it give identical request tables.

Choices (why: REPORT.md):

- **Model and context.** ``llama-2-7b`` (the catalog's Llama-2-7B: the same shapes as
  LLaMA-7B, 32 layers × 4096, so identical KV per token, KV capacity and iteration time; L1
  shows identical numbers) with its 4,096-token context, and every prompt and output clipped
  at 2,048 tokens (``max_prompt_tokens``/``max_output_tokens``), so that no request exceeds the
  context and none is rejected. The means actually run are recorded per run
  (``prompt_mean``/``output_mean``).
- **Policies** (:data:`POLICIES`), all settings of ``policy: {kind: llumnix}`` with its
  scaler off in L2/L3: round-robin, INFaaS++ (freeness dispatch without headroom, no
  migration), Llumnix-base (priority-agnostic, migration on, ``engine.priority_scheduling``
  false) and Llumnix (priority-aware, migration on, engine priority scheduling on).
"""

from __future__ import annotations

import copy
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import mixes  # noqa: E402

from chironsim.experiments.config import parse_config  # noqa: E402
from chironsim.experiments.result import Result  # noqa: E402
from chironsim.experiments.runner import build_simulation  # noqa: E402

MODEL = "llama-2-7b"
GPU = "a10"
#: Per-column clip: prompt ≤ 2,048 and output ≤ 2,048, so prompt + output ≤ Llama-2-7B's 4,096.
CLIP = 2048
NUM_REQUESTS = 10_000
INSTANCES = 16


@dataclass(frozen=True)
class Deployment:
    """One of the paper's two serving deployments (L2): the model, its tensor-parallel degree,
    the instance count and the per-column length clip that keeps prompt + output within the
    model's context."""

    model: str
    tp: int
    instances: int
    clip: int


#: "7b": 16 × LLaMA-7B shapes, TP 1 (see Choices). "30b": 4 × LLaMA-30B, TP 4, on the same A10s;
#: its context is 2,048 tokens, so prompt and output are each clipped at 1,024 (the mixes'
#: means shrink; the means actually run are recorded per run).
DEPLOYMENTS = {"7b": Deployment(MODEL, 1, INSTANCES, CLIP),
               "30b": Deployment("llama-30b", 4, 4, 1024)}
SEEDS = (1, 2, 3)
#: Period of the fragmentation probe (s): often enough to average over, cheap (16 reports).
PROBE_INTERVAL_S = 0.25

#: name -> (policy settings, engine.priority_scheduling). The scaler is added per stage.
POLICIES: dict[str, tuple[dict[str, Any], bool]] = {
    "round_robin": ({"dispatch": "round_robin", "migration": False, "priority_agnostic": True}, False),
    "infaas++": ({"dispatch": "infaas", "migration": False, "priority_agnostic": True}, False),
    "llumnix-base": ({"dispatch": "llumnix", "migration": True, "priority_agnostic": True}, False),
    "llumnix": ({"dispatch": "llumnix", "migration": True, "priority_agnostic": False}, True),
}


# --- scenarios -------------------------------------------------------------------------------

def _stream(mix: str, arrival: dict[str, Any], num_requests: int, request_class: str,
            clip: int = CLIP) -> dict[str, Any]:
    s = mixes.stream(mix, arrival, num_requests=num_requests, request_class=request_class)
    s["max_prompt_tokens"] = min(s.get("max_prompt_tokens", clip), clip)
    s["max_output_tokens"] = min(s.get("max_output_tokens", clip), clip)
    return s


def arrival(rate: float, cv: float | None) -> dict[str, Any]:
    """Poisson (``cv`` None or 1) or Gamma with coefficient of variation ``cv``."""
    if cv is None or cv == 1:
        return {"kind": "poisson", "rate": rate}
    return {"kind": "gamma", "rate": rate, "cv": cv}


def _base(name: str, seed: int, streams: list, classes: dict, policy: dict, priority_scheduling: bool,
          pool: dict, lifecycle: dict | None = None, model: str = MODEL) -> dict[str, Any]:
    cluster: dict[str, Any] = {"model": model, "gpu": GPU,
                               "engine": {"priority_scheduling": priority_scheduling},
                               "pools": {"default": pool}}
    if lifecycle:
        cluster["lifecycle"] = lifecycle
    return {"name": name, "seed": seed, "drain_s": 7200, "sample_interval_s": 5,
            "classes": classes, "workload": {"streams": streams}, "cluster": cluster,
            "policy": {"kind": "llumnix", **policy}, "output": {"plots": False}}


def l2_scenario(mix: str, policy: str, rate: float, cv: float | None, seed: int, *,
                num_requests: int = NUM_REQUESTS, instances: int | None = None,
                deployment: str = "7b") -> dict[str, Any]:
    """The deployment's instances (16 × 7B by default), one class, one stream of
    ``num_requests`` requests of ``mix``."""
    settings, prio = POLICIES[policy]
    dep = DEPLOYMENTS[deployment]
    tag = "" if deployment == "7b" else f"{deployment}-"
    pool: dict[str, Any] = {"instances": instances or dep.instances}
    if dep.tp != 1:
        pool["tp"] = dep.tp
    return _base(f"l2-{tag}{mix}-{policy}-r{rate:g}-cv{cv or 1:g}-s{seed}", seed,
                 [_stream(mix, arrival(rate, cv), num_requests, "default", dep.clip)],
                 {"default": {"priority": 0, "slo": {"ttft": 10.0}}},
                 {**settings, "scaling": False}, prio, pool, model=dep.model)


#: Share of high-priority requests (L3).
HIGH_SHARE = 0.10


def l3_scenario(mix: str, policy: str, headroom: int, rate: float, cv: float | None, seed: int, *,
                num_requests: int = NUM_REQUESTS, instances: int = INSTANCES) -> dict[str, Any]:
    """Two classes, ``high`` (priority 0, 10 % of the requests) and ``normal`` (priority 1), as
    two independent streams of the same mix with rates 10 % / 90 % of ``rate``. ``headroom`` is
    the high priority's ``headroom_blocks`` (ignored when the policy is priority-agnostic)."""
    settings, prio = POLICIES[policy]
    n_high = round(num_requests * HIGH_SHARE)
    policy_cfg = {**settings, "scaling": False}
    if not settings["priority_agnostic"] and headroom > 0:
        policy_cfg["headroom_blocks"] = {0: headroom}
    return _base(f"l3-{mix}-{policy}-h{headroom}-r{rate:g}-s{seed}", seed,
                 [_stream(mix, arrival(rate * HIGH_SHARE, cv), n_high, "high"),
                  _stream(mix, arrival(rate * (1 - HIGH_SHARE), cv), num_requests - n_high, "normal")],
                 {"high": {"priority": 0, "slo": {"ttft": 10.0}},
                  "normal": {"priority": 1, "slo": {"ttft": 10.0}}},
                 policy_cfg, prio, {"instances": instances})


#: L4's time-varying load: Poisson with a piecewise-constant rate (req/s) from each time (s).
STEP_RATES = (2.0, 6.0, 3.0)
#: The first, steeper profile (peak 9 req/s; its results: l4_steep.csv).
STEP_RATES_STEEP = (2.0, 9.0, 3.0)
STEP_TIMES = (0.0, 600.0, 1200.0)
STEP_DURATION_S = 1800.0
L4_INITIAL, L4_MIN, L4_MAX = 4, 1, 16


def l4_scenario(mix: str, policy: str, knob: float, provision_s: float, seed: int, *,
                rates: tuple[float, ...] = STEP_RATES, times: tuple[float, ...] = STEP_TIMES,
                duration_s: float = STEP_DURATION_S) -> dict[str, Any]:
    """Step load on a pool that starts at 4 instances and may grow to 16.

    ``policy``: ``llumnix`` (its freeness scaler, scale-down drains by migration),
    ``infaas++`` (the same scaler and thresholds, no migration: a terminating instance drains
    by finishing its requests; the paper's INFaaS++), or ``infaas+reactive`` (chironsim's
    ``reactive`` autoscaler on KV utilisation with the ``kv_aware`` router, most free KV
    blocks: INFaaS's memory-load dispatch without queued demand; the brief's baseline).
    ``knob`` is the scale-up freeness threshold (the scale-down one is 6× it, the released
    code's 10/60 ratio) for the first two, the KV-utilisation target for the reactive one.
    ``provision_s`` is the lifecycle's provisioning time (cold start = it + weights ÷ 2 GB/s
    + 10 s start-up)."""
    pool = {"instances": L4_INITIAL, "min_instances": L4_MIN, "max_instances": L4_MAX}
    lifecycle = {"provision_s": provision_s}
    stream = {**_stream(mix, {"kind": "step", "rates": list(rates), "times": list(times)},
                        0, "default"), "duration_s": duration_s}
    stream.pop("num_requests")
    classes = {"default": {"priority": 0, "slo": {"ttft": 10.0}}}
    name = f"l4-{mix}-{policy}-k{knob:g}-p{provision_s:g}-s{seed}"
    if policy == "infaas+reactive":
        cfg = _base(name, seed, [stream], classes, {}, False, pool, lifecycle)
        cfg["policy"] = {"kind": "reactive", "router": {"kind": "kv_aware"}, "metric": "kv_utilization",
                         "target": knob, "interval_s": 10.0, "scale_down_stabilization_s": 60.0,
                         "cooldown_s": 10.0, "min_instances": L4_MIN, "max_instances": L4_MAX}
    else:
        settings, prio = POLICIES[policy]
        cfg = _base(name, seed, [stream], classes,
                    {**settings, "scaling": True, "scale_up_threshold": knob,
                     "scale_down_threshold": 6 * knob}, prio, pool, lifecycle)
    cfg["duration_s"] = duration_s
    return cfg


# --- measurement -----------------------------------------------------------------------------

@dataclass
class FragmentationProbe:
    """Read-only sampler of the instances' load reports (``observes = "load"``; returns no
    action).

    Fragmentation, as the paper frames it (memory that is free but cannot serve the queue):
    at a sample, an instance is *blocked* when it has a waiting request whose head-of-line
    prompt demand exceeds its free blocks above the watermark. When at least one instance is
    blocked and the cluster's free blocks (above each watermark, summed over ready instances)
    could hold the smallest blocked head-of-line demand, all that free memory counts as
    fragmented: it exists, but it is split across instances so that the queue head cannot use
    it. Fragmentation = fragmented blocks ÷ total KV blocks of the ready instances, averaged
    over samples. ``blocked_share`` is the share of samples with any blocked instance."""

    interval: float = PROBE_INTERVAL_S
    observes: str = "load"
    samples: int = 0
    blocked: int = 0
    fragmented: list[float] = field(default_factory=list)

    def on_tick(self, view) -> list:
        free = total = 0.0
        demands = []
        for pool in view.pools.values():
            for r in pool.load:
                if r.state != "ready":
                    continue
                avail = max(0.0, r.free_blocks - r.watermark_blocks)
                free += avail
                total += r.total_blocks
                if r.waiting > 0 and r.head_of_line_blocks > avail:
                    demands.append(r.head_of_line_blocks)
        self.samples += 1
        frac = 0.0
        if demands:
            self.blocked += 1
            if free >= min(demands) and total > 0:
                frac = free / total
        self.fragmented.append(frac)
        return []


def simulate(cfg: dict[str, Any], probe: bool = True) -> tuple[Result, FragmentationProbe | None]:
    """``runner.run`` of ``cfg`` with the fragmentation probe added (or not)."""
    config = parse_config(copy.deepcopy(cfg), "<llumnix-experiment>", HERE)
    sim, bundle = build_simulation(config, HERE)
    sampler = FragmentationProbe() if probe else None
    if sampler is not None:
        sim.autoscalers.append(sampler)
    started = time.perf_counter()
    end = sim.run()
    wall = time.perf_counter() - started
    prices = {spec.gpu.name: spec.gpu.price_per_gpu_hour for spec in sim.cluster.pools.values()}
    result = Result.from_records(
        sim.request_records, sim.cluster.instance_records, sim.timeseries, sim.events,
        classes=config.classes, duration_s=max(end, 1e-9), price_per_gpu_hour=prices,
        manifest={"name": config.name, "seed": config.seed, "sim_end_s": end,
                  "wall_seconds": wall, "requests": sim.arrived, "policy": bundle.name})
    return result, sampler


def _pct(values: pd.Series, q: float) -> float:
    values = values.dropna()
    return float(np.percentile(values, q)) if len(values) else math.nan


def _latency(req: pd.DataFrame, prefix: str = "") -> dict[str, float]:
    fin = req[req.status == "finished"]
    return {
        f"{prefix}requests": len(req),
        f"{prefix}finished": len(fin),
        f"{prefix}ttft_mean": float(fin.ttft.mean()),
        f"{prefix}ttft_p50": _pct(fin.ttft, 50),
        f"{prefix}ttft_p99": _pct(fin.ttft, 99),
        f"{prefix}tpot_mean": float(fin.tpot.mean()),
        f"{prefix}tpot_p99": _pct(fin.tpot, 99),
        f"{prefix}itl_max_p99": _pct(fin.itl_max, 99),
        f"{prefix}e2e_mean": float(fin.e2e.mean()),
        f"{prefix}e2e_p99": _pct(fin.e2e, 99),
    }


def metrics(result: Result, probe: FragmentationProbe | None) -> dict[str, Any]:
    """One run's row. Definitions (REPORT.md):

    - ``tpot_p99``: P99 over finished requests of the request's mean time per output token
      after the first (the paper's per-token decode latency); ``itl_max_p99`` the P99 of each
      request's longest gap between tokens.
    - preemption loss: ``recomputed_tokens`` = tokens prefilled by all instances minus the
      prompts of the requests that started, i.e. the prompt + generated tokens recomputed after
      recompute preemptions (live migration recomputes nothing); per request, and
      ``preemptions`` (events) and ``preempted_share`` (requests preempted at least once).
    """
    req, inst, ev = result.requests, result.instances, result.events
    row: dict[str, Any] = _latency(req)
    for cls in sorted(req.request_class.unique()):
        if req.request_class.nunique() > 1:
            row.update(_latency(req[req.request_class == cls], f"{cls}_"))
    started = req[req.first_token_time.notna() | (req.preemptions > 0)]
    prefilled = float(inst.tokens_prefilled.sum())
    kinds = ev.kind.value_counts() if len(ev) else pd.Series(dtype=int)
    done = ev[ev.kind == "migrate_done"] if len(ev) else ev
    downtimes = [float(d.split("downtime_s=")[1].split(";")[0]) for d in done.detail] if len(done) else []
    row.update({
        "rejected": int((req.status == "rejected").sum()),
        "unfinished": int((req.status == "unfinished").sum()),
        "prompt_mean": float(req.prompt_tokens.mean()),
        "output_mean": float(req.output_tokens.mean()),
        "preemptions": int(kinds.get("preempt", 0)),
        "preempted_share": float((req.preemptions > 0).mean()),
        "recomputed_tokens": max(0.0, prefilled - float(started.prompt_tokens.sum())),
        "recomputed_tokens_per_req": max(0.0, prefilled - float(started.prompt_tokens.sum())) / len(req),
        "migrations_started": int(kinds.get("migrate_start", 0)),
        "migrations_done": int(kinds.get("migrate_done", 0)),
        "migrations_aborted": int(kinds.get("migrate_abort", 0)),
        "migration_downtime_ms_mean": float(np.mean(downtimes) * 1e3) if downtimes else math.nan,
        "gpu_hours": float(inst.gpu_seconds.sum() / 3600),
        "instances_max": int(result.timeseries.ready.max()) if len(result.timeseries) else 0,
        "sim_end_s": float(result.manifest["sim_end_s"]),
        "wall_s": float(result.manifest["wall_seconds"]),
    })
    if probe is not None and probe.samples:
        row["fragmentation"] = float(np.mean(probe.fragmented))
        row["blocked_share"] = probe.blocked / probe.samples
    return row


def run_point(tags: dict[str, Any], cfg: dict[str, Any], keep_timeseries: Path | None = None) -> dict[str, Any]:
    """Simulate one point and return ``tags`` + its metrics (``keep_timeseries``: also write the
    run's timeseries there, for figures)."""
    result, probe = simulate(cfg)
    if keep_timeseries is not None:
        keep_timeseries.parent.mkdir(parents=True, exist_ok=True)
        result.timeseries.to_parquet(keep_timeseries)
    return {**tags, **metrics(result, probe)}
