"""Reproduce the KunServe experiment (issue 10 item 4), stage by stage.

    .venv/bin/python experiments/kunserve/run.py --stage k1        # mechanism micro-benchmark (~5 s)
    .venv/bin/python experiments/kunserve/run.py --stage k2        # overload grid (~3 min on one core)
    .venv/bin/python experiments/kunserve/run.py --stage knee      # finer loads at the knees (~2 min)
    .venv/bin/python experiments/kunserve/run.py --stage ablation  # KunServe's options (~20 s)
    .venv/bin/python experiments/kunserve/run.py --stage leader    # a fused leader's batch limits (~10 s)
    .venv/bin/python experiments/kunserve/run.py --stage figures   # figures from the CSVs
    .venv/bin/python experiments/kunserve/run.py                   # every stage above
    .venv/bin/python experiments/kunserve/tables.py                # print the REPORT tables

Outputs: small CSVs beside this file (``k1.csv``, ``k1_checks.csv``, ``k1_overhead.csv``,
``k1_timeline.csv``, ``k1_requests.csv``, ``k1_events.csv``, ``k2.csv``, ``k2_hardware.csv``,
``k2_workloads.csv``, ``k2_knee.csv``, ``k2_ablation.csv``, ``k2_leader.csv``) and PNGs in
``figures/``; K1's raw tables of seed 1 go to ``results/`` (git-ignored). Why each choice was made:
REPORT.md. Runs go one at a time in this process (``--workers N`` runs K2 in a pool of N).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from chironsim.experiments.stages import run_stages

HERE = Path(__file__).resolve().parent
FIGURES = HERE / "figures"
sys.path.insert(0, str(HERE))

import k1  # noqa: E402
import k2  # noqa: E402
import kunserve_setups as scenarios  # noqa: E402

WORKERS = 1


# --- K1 --------------------------------------------------------------------------------------

def stage_k1(seeds=scenarios.SEEDS, out: Path = HERE) -> pd.DataFrame:
    """K1 on every seed, both policies; fails when any formula check fails. ``out``: where the
    CSVs go (the raw tables under ``out/results``, the figure under ``out/figures``)."""
    results = out / "results"
    runs, checks = k1.run_k1(seeds, keep=results)
    runs.to_csv(out / "k1.csv", index=False, float_format="%.6g")
    checks.to_csv(out / "k1_checks.csv", index=False, float_format="%.9g")
    pd.DataFrame(k1.overhead_rows()).to_csv(out / "k1_overhead.csv", index=False, float_format="%.6g")
    # seed 1's timeline and request table, both policies, for the figure (small: committed)
    timeline = pd.concat([pd.read_csv(results / f"k1_timeline_{p}.csv").assign(policy=p) for p in k1.POLICIES])
    timeline.to_csv(out / "k1_timeline.csv", index=False, float_format="%.6g")
    requests = pd.concat([pd.read_csv(results / f"k1_requests_{p}.csv").assign(policy=p) for p in k1.POLICIES])
    requests[["policy", "request_id", "arrival", "prompt_tokens", "output_tokens", "ttft", "tpot", "queue_s",
              "preemptions", "finish_time"]].to_csv(out / "k1_requests.csv", index=False, float_format="%.6g")
    events = pd.read_csv(results / "k1_events_kunserve.csv")
    events[events.kind.isin(["drop", "exchange", "restore", "split"])][["time", "kind", "reason", "detail"]].to_csv(
        out / "k1_events.csv", index=False)
    failed = checks[~checks.ok]
    for row in checks[checks.seed == seeds[0]].itertuples():
        print(f"  {'ok  ' if row.ok else 'FAIL'} {row.check}: sim {row.sim:.9g}, formula {row.formula:.9g}")
    if len(failed):
        raise RuntimeError(f"K1: {len(failed)} formula checks failed:\n{failed.to_string()}")
    figure_k1(out)
    return checks


def figure_k1(out: Path = HERE) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures = out / "figures"
    figures.mkdir(exist_ok=True)
    tl = pd.read_csv(out / "k1_timeline.csv")
    req = pd.read_csv(out / "k1_requests.csv")
    ev = pd.read_csv(out / "k1_events.csv")
    fig, (kv, state, ttft) = plt.subplots(3, 1, figsize=(9, 8), sharex=True)
    colors = {"vllm": "tab:red", "kunserve": "tab:blue"}
    labels = {"vllm": "vLLM (recompute)", "kunserve": "KunServe"}
    for policy, part in tl.groupby("policy"):
        kv.plot(part.time, part.used, color=colors[policy], label=f"{labels[policy]}: blocks used")
        kv.plot(part.time, part.used + part.waiting_blocks, color=colors[policy], ls=":", lw=1,
                label=f"{labels[policy]}: used + queued demand")
        kv.step(part.time, part.total, where="post", color=colors[policy], ls="--", lw=1,
                label=f"{labels[policy]}: capacity (group)")
    kv.set_ylabel("KV blocks (group of 2)")
    kv.set_ylim(0, None)
    kv.legend(fontsize=7, ncol=2)
    kv.set_title(f"K1: one g = 2 group ({k1.MODEL} on {k1.GPU}), burst of {k1.BURST['num_requests']} × "
                 f"{k1.BURST['prompt']}-token prompts at t = {k1.BURST['at']:g} s (seed 1)")
    ks = tl[tl.policy == "kunserve"]
    state.step(ks.time, ks.fused, where="post", color="tab:blue", label="members fused")
    state.step(ks.time, ks.waiting, where="post", color="tab:gray", lw=1, label="requests queued")
    for kind, style, ha in (("drop", "tab:green", "center"), ("restore", "tab:orange", "right"),
                            ("split", "tab:purple", "left")):
        for t in ev[ev.kind == kind].time:
            for ax in (kv, state, ttft):
                ax.axvline(t, color=style, lw=0.8, ls="-.")
            state.text(t, 1.02, kind, color=style, fontsize=7, transform=state.get_xaxis_transform(), ha=ha)
    for t in ev[(ev.kind == "exchange")].time:
        state.plot([t], [0.1], marker="|", color="black", ms=8)
    state.set_ylabel("KunServe group\n(exchange steps: |)")
    state.legend(fontsize=7, loc="upper right")
    for policy, part in req.groupby("policy"):
        ttft.scatter(part.arrival, part.ttft, s=8, color=colors[policy], label=labels[policy], alpha=0.8)
    ttft.set_yscale("log")
    ttft.set_ylabel("TTFT (s), per request")
    ttft.set_xlabel("time (s); TTFT drawn at each request's arrival")
    ttft.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(figures / "k1_timeline.png", dpi=120)
    plt.close(fig)


# --- K2 --------------------------------------------------------------------------------------

def run_jobs(jobs: list[tuple[dict, dict]], csv: Path, workers: int | None = None) -> pd.DataFrame:
    """Every (tags, config) job, in this process (workers 1) or a pool; rows written as they
    finish, so a killed stage keeps what it did."""
    workers = workers or WORKERS
    rows: list[dict] = []
    started = time.perf_counter()

    def done(row: dict) -> None:
        rows.append(row)
        if len(rows) % 25 == 0 or len(rows) == len(jobs):
            pd.DataFrame(rows).to_csv(csv, index=False, float_format="%.6g")
            print(f"  {len(rows)}/{len(jobs)} runs, {time.perf_counter() - started:.0f} s", flush=True)

    if workers == 1:
        for tags, cfg in jobs:
            done(k2.run_point(tags, cfg))
    else:
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(workers) as pool:
            for future in as_completed([pool.submit(k2.run_point, t, c) for t, c in jobs]):
                done(future.result())
    table = pd.DataFrame(rows)
    keys = [k for k in ("workload", "hardware", "load", "policy", "variant", "seed") if k in table]
    table = table.sort_values(keys, kind="stable") if len(table) else table
    table.to_csv(csv, index=False, float_format="%.6g")
    return table


def workload_rows() -> pd.DataFrame:
    """What each workload is, before any rate scaling: requests, span, means, share clipped."""
    from chironsim.experiments.config import parse_config
    from chironsim.workload.build import build_workload
    import numpy as np

    rows = []
    for workload in k2.WORKLOADS:
        hardware = "7b-a10" if workload != "long" else "8b-a100"
        load = 1.0 if workload != "burst" else k2.LOADS[("burst", "7b-a10")][0]
        cfg = parse_config(scenarios.k2_scenario(workload, hardware, "vllm", load, 1), "<k2>", HERE)
        wl = build_workload(cfg.workload, np.random.SeedSequence(1), HERE, cfg.duration_s)
        specs = list(wl)
        stats = getattr(wl, "stats", None)
        arrivals = [s.arrival for s in specs]
        row = {"workload": workload, "requests": len(specs), "span_s": max(arrivals) - min(arrivals),
               "rate_rps": len(specs) / max(1e-9, max(arrivals) - min(arrivals)),
               "prompt_mean": float(np.mean([s.prompt_tokens for s in specs])),
               "prompt_p99": float(np.percentile([s.prompt_tokens for s in specs], 99)),
               "output_mean": float(np.mean([s.output_tokens for s in specs])),
               "total_tokens": int(sum(s.prompt_tokens + s.output_tokens for s in specs))}
        if workload in scenarios.WINDOWS:
            w = scenarios.WINDOWS[workload]
            row["source"] = f"{w.file} rows {w.offset:,}-{w.offset + w.count - 1:,}"
        else:
            row["source"] = (f"synthetic, seed 1, base {load:g} req/s, spike ×{scenarios.SPIKE_FACTOR:g} "
                             f"over [{scenarios.SPIKE_START_S:g}, {scenarios.SPIKE_START_S + scenarios.SPIKE_S:g}) s")
        if stats is not None:
            for name in ("prompt_clipped", "output_clipped"):
                row[name] = sum(getattr(s, name) for s in stats)
        rows.append(row)
    return pd.DataFrame(rows)


def hardware_rows() -> pd.DataFrame:
    """Each hardware point's memory: W / M_kv, blocks per instance, a group of 2 before and
    after the drop (chironsim.perf.drop, the formula K1 checks)."""
    from chironsim.catalog import get_gpu, get_model
    from chironsim.perf.drop import droppable_weight_bytes, fused_kv_capacity_blocks, member_kv_bytes
    from chironsim.perf.memory import kv_capacity_blocks

    rows = []
    for hw in scenarios.HARDWARE.values():
        model, gpu = get_model(hw.model), get_gpu(hw.gpu)
        before = kv_capacity_blocks(model, gpu, hw.tp, 0.9, 16)
        after = fused_kv_capacity_blocks(model, gpu, hw.tp, 2, 0.9, 16)
        rows.append({"hardware": hw.key, "model": hw.model, "gpu": hw.gpu, "tp": hw.tp,
                     "instances": hw.instances,
                     "w_over_mkv": droppable_weight_bytes(model) / member_kv_bytes(model, gpu, hw.tp),
                     "blocks_per_instance": before, "tokens_per_instance": before * 16,
                     "blocks_before": 2 * before, "blocks_after": after, "gain": after / (2 * before),
                     "context": model.max_context})
    return pd.DataFrame(rows)


def stage_k2() -> pd.DataFrame:
    hardware_rows().to_csv(HERE / "k2_hardware.csv", index=False, float_format="%.6g")
    wl = workload_rows()
    wl.to_csv(HERE / "k2_workloads.csv", index=False, float_format="%.6g")
    print(wl.to_string(), flush=True)
    return run_jobs(k2.jobs(), HERE / "k2.csv")


def stage_knee() -> pd.DataFrame:
    return run_jobs(k2.knee_jobs(), HERE / "k2_knee.csv")


def stage_ablation() -> pd.DataFrame:
    return run_jobs(k2.ablation_jobs(), HERE / "k2_ablation.csv")


#: KunServe points whose fused leader is inspected (a round is one scheduler batch cut into g
#: micro-batches: does the group reach its limits, g x one engine's max_num_seqs and budget?)
LEADER_POINTS = (("conv", "7b-a10", 1.0), ("code", "8b-a10", 4.0), ("burst", "8b-a10", 4.0),
                 ("burst", "7b-a10", 2.0), ("long", "70b-a100", 1.0), ("long", "8b-a100", 1.0))


def stage_leader() -> pd.DataFrame:
    """Per point (seed 1): the most requests a fused leader ran at once and the share of its
    rounds that used the whole token budget, against the group's limits (as the leader held
    them while its rounds were priced) and one engine's; and the fused rounds' time with the
    micro-batch queues against the same rounds cut evenly (``pipelined_iteration_time``)."""
    from chironsim.catalog import get_gpu, get_model
    from chironsim.perf.efficiency import comm_for_gpu
    from chironsim.perf.roofline import IterationTimeModel
    from chironsim.sim.config import EngineConfig
    from chironsim.sim.mechanisms.fusion import pipelined_iteration_time, same_node

    engine = EngineConfig()
    rows = []
    for workload, hardware, load in LEADER_POINTS:
        cfg = scenarios.k2_scenario(workload, hardware, "kunserve", load, 1)
        result, probe, log = k1.simulate(cfg)
        frame = pd.DataFrame(probe.rows)
        leader = frame[(frame.group != "") & (frame.state == "ready")]
        alone = frame[frame.group == ""]
        tokens = [args[0] + args[2] for _, args, _ in log.calls]
        seqs, budget = max(log.limits) if log.limits else (0, 0)
        # the same rounds priced as one batch cut evenly (the price before the queues existed)
        hw = scenarios.HARDWARE[hardware]
        gpu = get_gpu(hw.gpu)
        even = pipelined_iteration_time(IterationTimeModel(get_model(hw.model), gpu, hw.tp),
                                        comm_for_gpu(gpu), k1.G, same_node(gpu.gpus_per_node, hw.tp, k1.G))
        even_s = sum(float(even(*args)) for _, args, _ in log.calls)
        queues_s = sum(x for _, _, x in log.calls)
        rows.append({"workload": workload, "hardware": hardware, "load": load,
                     "engine_max_num_seqs": engine.max_num_seqs,
                     "engine_max_num_batched_tokens": engine.max_num_batched_tokens,
                     "group_max_num_seqs": seqs, "group_max_num_batched_tokens": budget,
                     "leader_running_max": int(leader.running.max()) if len(leader) else 0,
                     "unfused_running_max": int(alone.running.max()) if len(alone) else 0,
                     "fused_rounds": len(tokens),
                     "rounds_at_token_budget": sum(t >= budget - 64 for t in tokens) / max(1, len(tokens)),
                     "rounds_with_prefill": sum(a[0] > 0 for _, a, _ in log.calls) / max(1, len(tokens)),
                     "round_s_median": float(pd.Series([x for _, _, x in log.calls]).median()) if tokens else 0.0,
                     "queues_over_even_cut": queues_s / even_s if even_s else 1.0})
    table = pd.DataFrame(rows)
    table.to_csv(HERE / "k2_leader.csv", index=False, float_format="%.6g")
    print(table.to_string())
    return table


def stage_figures() -> pd.DataFrame:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    FIGURES.mkdir(exist_ok=True)
    if (HERE / "k1_timeline.csv").exists():
        figure_k1()
    data = pd.read_csv(HERE / "k2.csv")
    means = data.groupby(["workload", "hardware", "load", "policy"]).mean(numeric_only=True).reset_index()
    hardware = [h for h in scenarios.HARDWARE if h in set(data.hardware)]
    workloads = [w for w in k2.WORKLOADS if w in set(data.workload)]
    styles = {"vllm": ("tab:red", "o-"), "swap": ("tab:orange", "s--"), "llumnix": ("tab:green", "^-."),
              "kunserve": ("tab:blue", "D-")}
    for metric, label, name in (("ttft_p99", "P99 TTFT (s)", "k2_ttft_p99.png"),
                                ("itl_p99", "P99 TBT (s)", "k2_tbt_p99.png"),
                                ("itl_p50", "P50 TBT (s)", "k2_tbt_p50.png")):
        fig, axes = plt.subplots(len(hardware), len(workloads), figsize=(3.4 * len(workloads), 2.8 * len(hardware)),
                                 squeeze=False)
        for i, hw in enumerate(hardware):
            for j, wl in enumerate(workloads):
                ax = axes[i][j]
                part = means[(means.hardware == hw) & (means.workload == wl)]
                if part.empty:
                    ax.axis("off")
                    ax.text(0.5, 0.5, f"{wl} on {hw}: not run\n(context or KV too small)", ha="center",
                            va="center", fontsize=8, transform=ax.transAxes)
                    continue
                for policy in k2.POLICIES:
                    g = part[part.policy == policy].sort_values("load")
                    color, style = styles[policy]
                    ax.plot(g.load, g[metric], style, color=color, ms=4, label=scenarios.POLICY_LABELS[policy])
                ax.set_xscale("log", base=2)
                ax.set_yscale("log")
                ax.set_title(f"{wl}, {hw}", fontsize=9)
                ax.set_xlabel("base rate (req/s)" if wl == "burst" else "rate scale", fontsize=8)
                ax.set_ylabel(label, fontsize=8)
                ax.tick_params(labelsize=7)
        axes[0][0].legend(fontsize=7)
        fig.suptitle(f"K2: {label} vs load, mean of 3 seeds", fontsize=10)
        fig.tight_layout()
        fig.savefig(FIGURES / name, dpi=110)
        plt.close(fig)

    import tables

    # best baseline ÷ KunServe P99 TTFT vs load: main grid and the finer knee scan
    both = tables._both()
    combos = list(k2.KNEE_LOADS)
    fig, axes = plt.subplots(1, len(combos), figsize=(3.2 * len(combos), 3.0), squeeze=False)
    for ax, (wl, hw) in zip(axes[0], combos):
        part = both[(both.workload == wl) & (both.hardware == hw)]
        m = part.groupby(["load", "policy"]).ttft_p99.mean().unstack()
        ratio = m[tables.BASELINES].min(axis=1) / m["kunserve"]
        ax.plot(ratio.index, ratio.values, "o-", color="tab:blue", ms=3, label="best baseline ÷ KunServe")
        ax.plot(ratio.index, (m["vllm"] / m["kunserve"]).values, "s:", color="tab:red", ms=3,
                label="vLLM ÷ KunServe")
        ax.axhline(1, color="grey", lw=0.8)
        ax.set_title(f"{wl}, {hw}", fontsize=9)
        ax.set_xlabel("base rate (req/s)" if wl == "burst" else "rate scale", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0][0].set_ylabel("P99 TTFT ratio")
    axes[0][0].legend(fontsize=7)
    fig.suptitle("K2: KunServe's P99 TTFT gain vs load (main grid + knee scan)", fontsize=10)
    fig.tight_layout()
    fig.savefig(FIGURES / "k2_knee.png", dpi=110)
    plt.close(fig)

    # sensitivity: best-baseline ÷ KunServe P99 TTFT, the largest over loads, vs W/M_kv
    verdict = tables.ratios(both)
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for wl, part in verdict.groupby("workload"):
        part = part.sort_values("w_over_mkv")
        ax.plot(part.w_over_mkv, part.max_ratio_best, "o-", label=wl)
    ax.axhline(1, color="grey", lw=0.8)
    ax.set_xlabel("droppable weights ÷ KV memory of one instance (W / M_kv)")
    ax.set_ylabel("max over loads of\nbest baseline P99 TTFT ÷ KunServe's")
    ax.set_yscale("log")
    ax.set_title("K2: KunServe's tail-TTFT gain vs the weights-to-KV ratio", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(FIGURES / "k2_sensitivity.png", dpi=110)
    plt.close(fig)
    return pd.DataFrame()


STAGES: dict[str, Callable[[], pd.DataFrame]] = {"k1": stage_k1, "k2": stage_k2, "knee": stage_knee,
                                                  "ablation": stage_ablation, "leader": stage_leader,
                                                  "figures": stage_figures}


def _set_workers(workers: int) -> None:
    global WORKERS
    WORKERS = workers


def main(argv: list[str] | None = None) -> None:
    run_stages(STAGES, __doc__.split("\n\n")[0], 1, _set_workers, argv)


if __name__ == "__main__":
    main()
