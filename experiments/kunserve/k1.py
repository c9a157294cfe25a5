"""K1: the mechanism micro-benchmark of the KunServe experiment (issue 10 item 4).

One KunServe group of g = 2 Llama-2-7B instances on A10 (weights large next to KV memory), a
Poisson background of short requests, and at t = 10 s a burst of :data:`BURST` long prompts
that the two instances' KV cannot hold apart but the fused group can. The same scenario runs
under the vLLM baseline (recompute preemption, fewest-outstanding dispatch) for comparison.

Every run is checked against the formulas, each computed here from the model's dimensions and
the GPU's measured send/recv curve, not by calling the function the simulator uses:

- **capacity**: the drop event's blocks after = ⌊C_after / block⌋ with
  C_after = g·M_kv/κ + (g−1)·W/κ tokens (``perf.drop``; g divides L here, so every member
  keeps L/g layers);
- **exchange**: each stale step's seconds = send_recv(T·κ_gpu·(g−1)/g) for its T tokens, it
  lands at start + seconds, at most 8 requests a step, and the steps carry every stale request
  the drop event counts (``perf.exchange.kv_exchange_seconds``);
- **restore**: the restore event's seconds = send_recv(L·(g−1)/g × layer bytes ÷ tp), the
  conversion steps start after the reload ends, and the split comes after them
  (``perf.exchange.restore_seconds``);
- **pipeline**: every round the fused leader priced is recomputed from its g micro-batches
  (one per micro-batch queue, as the leader formed them): stage times from the roofline (L/g
  layers, LM head on the last stage), one activation hop (tokens × hidden × 2 B over
  send/recv) per boundary, and the
  steady-state period of the in-order schedule found by stepping 240 rounds of a plain
  pipeline simulation written here (``perf.pipeline.cycle_time`` solves it with Karp's
  algorithm instead); the leader's consecutive rounds are spaced by exactly their price.

A read-only :class:`Probe` (``observes = "load"``, returns no action) samples every instance's
load report every 0.1 s for the timeline figure; the test checks it changes nothing.
"""

from __future__ import annotations

import copy
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import kunserve_setups as scenarios  # noqa: E402

from chironsim.catalog import get_gpu, get_model  # noqa: E402
from chironsim.experiments.config import parse_config  # noqa: E402
from chironsim.experiments.result import Result  # noqa: E402
from chironsim.experiments.runner import build_simulation  # noqa: E402
from chironsim.perf.efficiency import comm_for_gpu  # noqa: E402
from chironsim.perf.memory import estimate_activation_bytes  # noqa: E402
from chironsim.perf.roofline import IterationTimeModel  # noqa: E402

MODEL, GPU, TP, G = "llama-2-7b", "a10", 1, 2
HARDWARE = scenarios.Hardware("k1", MODEL, GPU, TP, G)
BLOCK = 16  # engine.block_size default
UTIL = 0.9  # engine.gpu_memory_utilization default
EXCHANGE_BATCH = 8
#: the burst: requests, prompt and output tokens, when (s) and over how long (s)
BURST = {"num_requests": 24, "prompt": 2048, "output": 256, "at": 10.0, "window": 2.0}
BACKGROUND_RATE = 1.0
DURATION_S = 60.0
PROBE_INTERVAL_S = 0.1
POLICIES = ("vllm", "kunserve")
#: tolerances of the checks: float rounding only
REL = 1e-9


def k1_scenario(policy: str, seed: int, burst: dict | None = None) -> dict[str, Any]:
    b = {**BURST, **(burst or {})}
    streams = [
        {"kind": "synthetic", "arrival": {"kind": "poisson", "rate": BACKGROUND_RATE},
         "prompt_tokens": {"kind": "lognormal", "median": 400.0, "sigma": 0.5},
         "output_tokens": {"kind": "lognormal", "median": 200.0, "sigma": 0.5},
         "duration_s": DURATION_S},
        {"kind": "batch", "request_class": "default", "num_requests": b["num_requests"],
         "submit_at": b["at"], "window_s": b["window"], "deadline_s": 600,
         "prompt_tokens": {"kind": "fixed", "value": b["prompt"]},
         "output_tokens": {"kind": "fixed", "value": b["output"]}},
    ]
    cfg = scenarios.scenario(f"k1-{policy}-s{seed}", seed, HARDWARE, policy, streams,
                             sample_interval_s=0.5, drain_s=600.0)
    cfg["duration_s"] = DURATION_S
    return cfg


# --- independent formulas --------------------------------------------------------------------

def layer_bytes(model) -> int:
    """One decoder layer's BF16 weights from the model's dimensions (Llama: q, k, v, o
    projections, gate/up/down MLP, two RMS norms)."""
    h, hd = model.hidden_size, model.head_dim
    attention = h * model.num_heads * hd + 2 * h * model.num_kv_heads * hd + model.num_heads * hd * h
    mlp = 3 * h * model.intermediate_size
    return 2 * (attention + mlp + 2 * h)


def whole_model_bytes(model) -> int:
    """All BF16 weights: the layers, the embeddings and an untied LM head, the final norm."""
    return model.num_layers * layer_bytes(model) + 2 * (2 * model.vocab_size * model.hidden_size + model.hidden_size)


def kv_bytes_per_token(model, tp: int = 1) -> int:
    """κ per instance (all tp GPUs) for a model whose KV heads split evenly over tp."""
    return 2 * model.num_layers * model.num_kv_heads * model.head_dim * 2


@dataclass(frozen=True)
class Formulas:
    """The K1 group's quantities from first principles (g divides L, tp = 1)."""

    m_kv: float  # bytes of KV memory of one member before the drop
    w: float  # bytes of one member's per-layer weights (all L layers)
    kappa: float  # KV bytes per token
    blocks_before: int  # one member's blocks
    c_after_tokens: float
    blocks_after: int
    restore_bytes: float  # per GPU

    def exchange_bytes(self, tokens: int) -> float:
        return tokens * self.kappa * (G - 1) / G


def formulas(model_name: str = MODEL, gpu_name: str = GPU, g: int = G) -> Formulas:
    model, gpu = get_model(model_name), get_gpu(gpu_name)
    if model.num_layers % g:
        raise ValueError("K1's closed forms assume g divides L")
    m_kv = gpu.memory_bytes * UTIL * TP - whole_model_bytes(model) - estimate_activation_bytes(model, TP)
    w = model.num_layers * layer_bytes(model)
    kappa = kv_bytes_per_token(model)
    c_after = g * m_kv / kappa + (g - 1) * w / kappa
    return Formulas(m_kv, w, kappa, int(m_kv // (kappa * BLOCK)), c_after, int(c_after // BLOCK),
                    model.num_layers * (g - 1) / g * layer_bytes(model) / TP)


def steady_period(stage_seconds: list[list[float]], hops: list[float], rounds: int = 240) -> float:
    """Period of the in-order pipeline schedule by plain stepping: every stage serves the
    micro-batches in a fixed order; a micro-batch enters stage i once stage i−1 finished it and
    its hop arrived and stage i is free, and re-enters stage 0 once it left the last stage.
    Measured over the second half of ``rounds`` (divisible by 1..6, so a periodic regime of
    cyclicity up to 6 is measured exactly)."""
    m, g = len(stage_seconds), len(stage_seconds[0])
    ready = [0.0] * m
    free = [0.0] * g
    last = []
    for _ in range(rounds):
        for k in range(m):
            t = ready[k]
            for i in range(g):
                if i:
                    t += hops[k]
                t = max(t, free[i]) + stage_seconds[k][i]
                free[i] = t
            ready[k] = t
        last.append(ready[-1])
    half = rounds // 2
    return (last[-1] - last[half - 1]) / (rounds - half)


def round_price(timer: IterationTimeModel, comm, g: int, batches: tuple) -> float:
    """A fused round's seconds recomputed from its micro-batches (prefill tokens, attention
    work, decodes, context), the roofline's stage prices and send/recv."""
    layers = [timer.model.num_layers // g] * g
    batches = [b for b in batches if b[0] or b[2]]
    if not batches:
        return 0.0
    stages = [[timer.stage_time(n, i == g - 1, *b) for i, n in enumerate(layers)] for b in batches]
    hops = [comm.send_recv((b[0] + b[2]) * timer.model.hidden_size * 2) for b in batches]
    if len(batches) == 1:
        return sum(stages[0]) + (g - 1) * hops[0]
    return steady_period(stages, hops)


# --- instrumentation -------------------------------------------------------------------------

@dataclass
class Probe:
    """Read-only sampler of the load reports (returns no action)."""

    interval: float = PROBE_INTERVAL_S
    observes: str = "load"
    rows: list[dict] = field(default_factory=list)

    def on_tick(self, view) -> list:
        for pool in view.pools.values():
            for r in pool.load:
                self.rows.append({"time": view.time, "instance": r.instance_id, "state": r.state,
                                  "group": r.group, "total_blocks": r.total_blocks,
                                  "free_blocks": r.free_blocks, "running": r.running,
                                  "waiting": r.waiting, "waiting_blocks": r.waiting_prompt_blocks})
        return []


@dataclass
class PriceLog:
    """Wraps the fused leader's round price (its micro-batch queues' ``batch_time``): every
    round's time, totals (prefill tokens, attention work, decodes, context) and seconds in
    ``calls``, and its micro-batches, one per queue, in ``batches``."""

    env: Any
    calls: list[tuple[float, tuple, float]] = field(default_factory=list)
    batches: list[tuple] = field(default_factory=list)
    #: the leader's (max_num_seqs, max_num_batched_tokens) seen by the priced rounds
    limits: set[tuple[int, int]] = field(default_factory=set)

    def wrap(self, factory):
        def make(leader, group_size):
            queues = factory(leader, group_size)
            price = queues.batch_time

            def logged(step, chunks, decodes):
                seconds = price(step, chunks, decodes)
                batches = tuple(queues.last)
                totals = tuple(sum(b[i] for b in batches) for i in range(4))
                self.calls.append((self.env.now, totals, float(seconds)))
                self.batches.append(batches)
                self.limits.add((leader.max_num_seqs, leader.max_batched_tokens))
                return seconds
            queues.batch_time = logged
            return queues
        return make


def simulate(cfg: dict[str, Any], probe: bool = True, log_prices: bool = True, tamper=None):
    """``runner.run``'s steps with the probe and the price log added. ``tamper(sim)``, when
    given, may alter the simulation before it runs (the tests use it to show that every check
    can fail)."""
    config = parse_config(copy.deepcopy(cfg), "<kunserve-k1>", HERE)
    sim, bundle = build_simulation(config, HERE)
    if tamper is not None:
        tamper(sim)
    sampler = Probe() if probe else None
    if sampler is not None:
        sim.autoscalers.append(sampler)
    log = PriceLog(sim.cluster.fusion.env)
    if log_prices:
        sim.cluster.fusion._pipelined_time = log.wrap(sim.cluster.fusion._pipelined_time)
    end = sim.run()
    prices = {spec.gpu.name: spec.gpu.price_per_gpu_hour for spec in sim.cluster.pools.values()}
    result = Result.from_records(
        sim.request_records, sim.cluster.instance_records, sim.timeseries, sim.events,
        classes=config.classes, duration_s=max(end, 1e-9), price_per_gpu_hour=prices,
        manifest={"name": config.name, "seed": config.seed, "sim_end_s": end, "policy": bundle.name},
        itl=sim.itl_recorder.by_class)
    return result, sampler, log


# --- checks ----------------------------------------------------------------------------------

def _detail(text: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in text.split(";")[1:])


def check_run(result: Result, log: PriceLog) -> list[dict]:
    """One row per check: its name, the simulated and the formula value, and ``ok``."""
    f = formulas()
    model, gpu = get_model(MODEL), get_gpu(GPU)
    comm = comm_for_gpu(gpu)
    timer = IterationTimeModel(model, gpu, TP)
    ev = result.events
    rows: list[dict] = []

    def add(check: str, sim: float, formula: float, ok: bool | None = None, note: str = "") -> None:
        if ok is None:
            ok = math.isclose(sim, formula, rel_tol=REL, abs_tol=1e-12)
        rows.append({"check": check, "sim": sim, "formula": formula, "ok": bool(ok), "note": note})

    drops = ev[ev.kind == "drop"]
    add("drops", len(drops), 1, len(drops) >= 1, "the burst makes the group drop")
    for _, d in drops.iterrows():
        m = re.search(r"blocks (\d+)->(\d+), (\d+) stale", d.detail)
        before, after, stale = int(m.group(1)), int(m.group(2)), int(m.group(3))
        add("capacity before (blocks)", before, G * f.blocks_before)
        add("capacity after (blocks)", after, f.blocks_after,
            note=f"C_after = {f.c_after_tokens:.1f} tokens (M_kv {f.m_kv / 2**30:.3f} GiB, "
                 f"W {f.w / 2**30:.3f} GiB, κ {f.kappa / 2**10:.0f} KiB)")
        steps = ev[(ev.kind == "exchange") & (ev.reason == "stale") & (ev.time >= d.time)]
        nxt = ev[(ev.kind == "restore") & (ev.time > d.time)]
        if len(nxt):
            steps = steps[steps.time <= nxt.time.iloc[0]]
        moved = 0
        worst_err, worst_land = 0.0, 0.0
        for _, s in steps.iterrows():
            info = _detail(s.detail)
            n, tokens, seconds, start = int(info["requests"]), int(info["tokens"]), float(info["seconds"]), float(info["start"])
            moved += n
            expect = comm.send_recv(f.exchange_bytes(tokens))
            worst_err = max(worst_err, abs(seconds - expect) / expect)
            worst_land = max(worst_land, abs(s.time - (start + seconds)))
            if n > EXCHANGE_BATCH:
                add("exchange step size", n, EXCHANGE_BATCH, False)
        add("stale requests exchanged", moved, stale)
        add("exchange seconds, worst rel. error", worst_err, 0.0, worst_err <= REL,
            f"{len(steps)} steps; send_recv(T·κ·(g−1)/g)")
        add("exchange lands at start + seconds, worst |Δ| s", worst_land, 0.0, worst_land <= 1e-9)
    for _, r in ev[ev.kind == "restore"].iterrows():
        seconds = float(r.detail.split(", ")[-1].rstrip(" s"))
        expect = comm.send_recv(f.restore_bytes)
        add("restore seconds", seconds, expect, math.isclose(seconds, expect, rel_tol=1e-5),
            f"send_recv({f.restore_bytes / 2**30:.3f} GiB) (event rounds to 6 digits)")
        split = ev[(ev.kind == "split") & (ev.time > r.time)]
        conv = ev[(ev.kind == "exchange") & (ev.reason == "convert") & (ev.time > r.time)]
        if len(split):
            conv = conv[conv.time <= split.time.iloc[0] + 1e-12]
            starts = [float(_detail(x)["start"]) for x in conv.detail]
            first = min(starts) if starts else split.time.iloc[0]
            add("reload done before conversion starts (s)", first - r.time, expect,
                first - r.time >= expect * (1 - 1e-5))
            add("conversion steps ≤ 8 requests", max((int(_detail(x)["requests"]) for x in conv.detail), default=0),
                EXCHANGE_BATCH, all(int(_detail(x)["requests"]) <= EXCHANGE_BATCH for x in conv.detail))
    if log.calls:
        errors = [abs(sec - round_price(timer, comm, G, batches)) / max(sec, 1e-12)
                  for (_, _, sec), batches in zip(log.calls, log.batches)]
        add("pipelined rounds, worst rel. error", max(errors), 0.0, max(errors) <= 1e-9,
            f"{len(log.calls)} rounds recomputed (per-queue micro-batches, stages, hops, "
            "stepped period)")
        gaps = [(t1 - t0, sec) for (t0, _, sec), (t1, _, _) in zip(log.calls, log.calls[1:])]
        exact = sum(abs(gap - sec) <= 1e-9 for gap, sec in gaps)
        short = sum(gap < sec - 1e-9 for gap, sec in gaps)
        add("rounds spaced by their price (share)", exact / max(1, len(gaps)), 1.0,
            short == 0 and exact >= 0.5 * len(gaps),
            f"{short} gaps shorter than the price; longer ones: idle leader or paused requests")
    return rows


def overhead_rows() -> list[dict]:
    """Decode time per token in a fused g = 2 group ÷ in two independent instances, for the
    same ``decodes`` requests (each instance then holds half of them): what a decoding request
    pays per token while fused, from the mechanism alone (no queueing). Each request has 1,500
    tokens of context."""
    from chironsim.sim.mechanisms.fusion import pipelined_iteration_time, same_node

    rows = []
    for hw in scenarios.HARDWARE.values():
        model, gpu = get_model(hw.model), get_gpu(hw.gpu)
        timer = IterationTimeModel(model, gpu, hw.tp)
        comm = comm_for_gpu(gpu)
        price = pipelined_iteration_time(timer, comm, G, same_node(gpu.gpus_per_node, hw.tp, G))
        for decodes in (2, 8, 32, 128, 256):
            alone = float(timer.iteration_time(0, 0.0, decodes // G, 1500 * (decodes // G)))
            fused = float(price(0, 0.0, decodes, 1500 * decodes))
            rows.append({"hardware": hw.key, "decodes_in_group": decodes, "context_per_seq": 1500,
                         "unfused_ms": alone * 1e3, "fused_round_ms": fused * 1e3, "ratio": fused / alone})
    return rows


def timeline(result: Result, probe: Probe) -> pd.DataFrame:
    """Per probe time: the group's used and total blocks, queued demand, fused members."""
    frame = pd.DataFrame(probe.rows)
    frame["used"] = frame.total_blocks - frame.free_blocks
    frame["fused"] = (frame.group != "").astype(int)
    agg = frame.groupby("time").agg(used=("used", "sum"), total=("total_blocks", "sum"),
                                    waiting=("waiting", "sum"), waiting_blocks=("waiting_blocks", "sum"),
                                    running=("running", "sum"), fused=("fused", "sum")).reset_index()
    return agg


def run_k1(seeds=scenarios.SEEDS, policies=POLICIES, keep: Path | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every (policy, seed): a row of metrics per run (``k1.csv``) and, for KunServe, the checks
    (``k1_checks.csv``). ``keep``: a folder for seed 1's timelines and request tables."""
    runs, checks = [], []
    for seed in seeds:
        for policy in policies:
            result, probe, log = simulate(k1_scenario(policy, seed))
            s = result.summary.iloc[-1]
            kinds = result.events.kind.value_counts()
            runs.append({"policy": policy, "seed": seed, "requests": int(s.requests), "finished": int(s.finished),
                         "ttft_p50": s.ttft_p50, "ttft_p99": s.ttft_p99, "ttft_p999": s.ttft_p999,
                         "itl_p50": s.itl_p50, "itl_p99": s.itl_p99, "queue_p99": s.queue_p99,
                         "preemptions": int(kinds.get("preempt", 0)), "drops": int(kinds.get("drop", 0)),
                         "splits": int(kinds.get("split", 0)), "exchanges": int(kinds.get("exchange", 0)),
                         "fused_rounds": len(log.calls)})
            if policy == "kunserve":
                for row in check_run(result, log):
                    checks.append({"seed": seed, **row})
            if keep is not None and seed == seeds[0]:
                keep.mkdir(parents=True, exist_ok=True)
                timeline(result, probe).to_csv(keep / f"k1_timeline_{policy}.csv", index=False)
                result.requests.to_csv(keep / f"k1_requests_{policy}.csv", index=False)
                result.events.to_csv(keep / f"k1_events_{policy}.csv", index=False)
    return pd.DataFrame(runs), pd.DataFrame(checks)
