"""Reproduce the Llumnix experiment (issue 9 item 9), stage by stage.

    .venv/bin/python experiments/llumnix/run.py --stage l1      # migration micro-benchmark (~15 s)
    .venv/bin/python experiments/llumnix/run.py --stage mixes   # Table 1 length mixes (~5 s)
    .venv/bin/python experiments/llumnix/run.py --stage l2scan --stage l2 --stage l3 --stage l4 --stage l4steep --stage figures  # ~17 min on 2 cores
    .venv/bin/python experiments/llumnix/run.py --stage l2scan30b --stage l2_30b --stage figures  # LLaMA-30B L2
    .venv/bin/python experiments/llumnix/run.py                 # every stage above
    .venv/bin/python experiments/llumnix/tables.py              # print the tables from the CSVs

Outputs: small CSVs beside this file (``l1.csv``, ``mixes.csv``) and PNGs in ``figures/``.
Why each choice was made: REPORT.md.

L2-L4 (``serving.py``): 16 × LLaMA-7B-shaped instances on A10, three mixes, the four
policies, 3 seeds; raw timeseries of L4's figure go to ``results/`` (git-ignored). L2 also on
4 × LLaMA-30B (TP 4): stages ``l2scan30b`` and ``l2_30b`` (~25 min on one core). REPORT.md says
what was and was not run.
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

import l1  # noqa: E402
import mixes  # noqa: E402
import serving  # noqa: E402

#: Requests drawn per mix to measure its sample means (the paper's runs have 10k; more here so
#: that the measured mean says something about the distribution, not one run's luck).
MIX_DRAWS = 100_000


def stage_l1() -> pd.DataFrame:
    """Every L1 case once (the scenario is deterministic: each case is checked on a second
    seed, and a case whose seed changes anything fails the stage)."""
    rows = []
    references: dict[tuple[str, int], float] = {}
    for case in l1.cases():
        key = (case.model, case.tokens)
        if key not in references:
            references[key] = l1.unmigrated_e2e_s(case)
        row = l1.run_case(case, references[key])
        if not l1.check_seed_independent(case):
            raise RuntimeError(f"{case}: seeds 0 and 1 disagree; the scenario is not deterministic")
        row["seed_independent"] = True
        rows.append(row)
        print(f"  {case.model:10s} {case.tokens:5d} {case.mode:9s} downtime "
              f"{row['downtime_ms']:8.2f} ms  total {row['total_ms']:8.1f} ms  "
              f"stages {row['stages']} ({row['stage_blocks'] or '-'})", flush=True)
    table = pd.DataFrame(rows)
    table.to_csv(HERE / "l1.csv", index=False, float_format="%.6g")
    figure_l1(table)
    return table


def figure_l1(table: pd.DataFrame) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    FIGURES.mkdir(exist_ok=True)
    data = table[table.model == "llama-7b"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    styles = {"live": ("o-", "live migration"), "blocking": ("s--", "blocking copy"),
              "recompute": ("^:", "recompute")}
    for mode, (style, label) in styles.items():
        part = data[data["mode"] == mode].sort_values("tokens")
        left.plot(part.tokens, part.downtime_ms, style, label=label)
    left.set_xscale("log", base=2)
    left.set_yscale("log")
    left.set_xticks(l1.LENGTHS, [f"{t // 1024}k" for t in l1.LENGTHS])
    left.set_xlabel("sequence length at migration (tokens)")
    left.set_ylabel("downtime (ms)")
    left.axhspan(20, 30, color="grey", alpha=0.2, label="paper (recalled, unverified): live ~20-30 ms")
    left.set_title("Downtime, LLaMA-7B on A10 (chironsim)")
    left.legend(fontsize=8)
    live = data[data["mode"] == "live"].sort_values("tokens")
    right.bar([f"{t // 1024}k" for t in live.tokens], live.total_ms, label="whole live migration")
    right.bar([f"{t // 1024}k" for t in live.tokens], live.downtime_ms, label="of which downtime")
    right.set_xlabel("sequence length at migration")
    right.set_ylabel("ms")
    right.set_title("Live migration: total time vs downtime")
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(FIGURES / "l1_downtime.png", dpi=120)
    plt.close(fig)


def stage_mixes() -> pd.DataFrame:
    """Each Table 1 mix: the paper's means, the exact means of the distributions as defined
    (clip included), and the sample means of ``MIX_DRAWS`` requests drawn by chironsim."""
    rows = []
    for name, mix in mixes.MIXES.items():
        prompt_mean, output_mean = mixes.sample_means(mix, MIX_DRAWS, seed=0)
        rows.append({
            "mix": name,
            "prompt_dist": _describe(mix.prompt, mix.max_prompt),
            "output_dist": _describe(mix.output, mix.max_output),
            "paper_prompt_mean": mix.paper_prompt_mean,
            "exact_prompt_mean": mixes.exact_mean(mix.prompt, mix.max_prompt),
            "sample_prompt_mean": prompt_mean,
            "paper_output_mean": mix.paper_output_mean,
            "exact_output_mean": mixes.exact_mean(mix.output, mix.max_output),
            "sample_output_mean": output_mean,
            "draws": MIX_DRAWS,
        })
    table = pd.DataFrame(rows)
    table.to_csv(HERE / "mixes.csv", index=False, float_format="%.6g")
    return table


def _describe(spec: dict, cap: int | None) -> str:
    if spec["kind"] == "lognormal":
        text = f"lognormal(mean {spec['mean']:g}, sigma {spec['sigma']:g})"
    else:
        text = (f"powerlaw(a {spec['a']:g}, ranks {spec['min']}..{spec['max']}, "
                f"scale {spec['scale']:.4g})")
    return text + (f", clip {cap}" if cap is not None else "")


# --- L2-L4: many independent runs, in a process pool -------------------------------------

RESULTS = HERE / "results"  # git-ignored: timeseries of the runs the figures draw over time
WORKERS = 2


def _point(job: tuple[dict, dict, str | None]) -> dict:
    tags, cfg, keep = job
    return serving.run_point(tags, cfg, Path(keep) if keep else None)


def run_jobs(jobs: list[tuple[dict, dict, str | None]], csv: Path, workers: int | None = None) -> pd.DataFrame:
    """Run every (tags, config, timeseries path) job, ``workers`` at a time, and write their
    rows to ``csv`` (rows are written as they finish, so a killed stage keeps what it did)."""
    from concurrent.futures import ProcessPoolExecutor, as_completed

    workers = workers or WORKERS
    rows = []
    started = time.perf_counter()
    with ProcessPoolExecutor(workers) as pool:
        futures = {pool.submit(_point, job): job for job in jobs}
        for i, future in enumerate(as_completed(futures), 1):
            row = future.result()
            rows.append(row)
            if i % 10 == 0 or i == len(jobs):
                pd.DataFrame(rows).to_csv(csv, index=False, float_format="%.6g")
                print(f"  {i}/{len(jobs)} runs, {time.perf_counter() - started:.0f} s", flush=True)
    table = pd.DataFrame(rows)
    table.to_csv(csv, index=False, float_format="%.6g")
    return table


#: L2's rate scan (one seed): where INFaaS++'s P99 TTFT starts to grow, per mix.
L2_MIXES = ("sharegpt", "burstgpt", "L-L")
SCAN_RATES = (8.0, 10.0, 12.0, 14.0, 16.0, 18.0, 20.0, 22.0)
SCAN_POLICIES = ("infaas++", "llumnix")


def l2scan_jobs(mixes_=L2_MIXES, rates=SCAN_RATES, num_requests=serving.NUM_REQUESTS,
                deployment="7b"):
    return [({"mix": m, "policy": p, "rate": r, "cv": 1.0, "seed": 1},
             serving.l2_scenario(m, p, r, None, 1, num_requests=num_requests,
                                 deployment=deployment), None)
            for m in mixes_ for r in rates for p in SCAN_POLICIES]


def stage_l2scan() -> pd.DataFrame:
    return run_jobs(l2scan_jobs(), HERE / "l2_scan.csv")


#: L2's main grid, per mix: the rates (req/s) chosen from the scan (REPORT.md) and the
#: arrival CVs (1 = Poisson). Set from l2_scan.csv: the knee is the highest scanned rate
#: before INFaaS++'s P99 TTFT leaves its flat low-load level.
L2_RATES: dict[str, tuple[float, ...]] = {"sharegpt": (14.0,), "burstgpt": (16.0,), "L-L": (10.0,)}
L2_CVS = (1.0, 2.0, 4.0)
#: One step past the knee, Poisson only (where INFaaS++ already queues).
L2_POISSON_PAST_KNEE: dict[str, float] = {"sharegpt": 15.0, "burstgpt": 17.0, "L-L": 11.0}
L2_POLICIES = tuple(serving.POLICIES)


def l2_jobs(rates=None, cvs=L2_CVS, seeds=serving.SEEDS, num_requests=serving.NUM_REQUESTS,
            past_knee=None, deployment="7b"):
    if rates is None:
        rates, past_knee = L2_RATES, L2_POISSON_PAST_KNEE
    points = [(m, r, cv) for m, rs in rates.items() for r in rs for cv in cvs]
    points += [(m, r, 1.0) for m, r in (past_knee or {}).items()]
    jobs = []
    for m, r, cv in points:
        for p in L2_POLICIES:
            for seed in seeds:
                jobs.append(({"mix": m, "policy": p, "rate": r, "cv": cv, "seed": seed},
                             serving.l2_scenario(m, p, r, cv, seed, num_requests=num_requests,
                                                 deployment=deployment), None))
    return jobs


def stage_l2() -> pd.DataFrame:
    return run_jobs(l2_jobs(), HERE / "l2.csv")


#: The LLaMA-30B deployment (4 × TP 4 on A10): its rate scan, lower rates for a slower model.
SCAN_RATES_30B = (1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0)
#: The knee rule, written down for the 30B scan (the 7B knees were read off l2_scan.csv by the
#: same rule): the highest scanned rate whose INFaaS++ P99 TTFT is within KNEE_FACTOR of its
#: value at the lowest scanned rate. One step past it is the next scanned rate.
KNEE_FACTOR = 1.5


def knees(scan: pd.DataFrame) -> tuple[dict[str, tuple[float, ...]], dict[str, float]]:
    """(knee rate per mix, next scanned rate per mix) from a rate scan's rows."""
    at_knee: dict[str, tuple[float, ...]] = {}
    past: dict[str, float] = {}
    for mix, part in scan[scan.policy == "infaas++"].groupby("mix", sort=False):
        part = part.sort_values("rate")
        flat = part.ttft_p99.iloc[0] * KNEE_FACTOR
        rates = list(part.rate)
        knee = max(r for r, p99 in zip(part.rate, part.ttft_p99) if p99 <= flat)
        at_knee[mix] = (float(knee),)
        if rates.index(knee) + 1 < len(rates):
            past[mix] = float(rates[rates.index(knee) + 1])
    return at_knee, past


def stage_l2scan30b() -> pd.DataFrame:
    return run_jobs(l2scan_jobs(rates=SCAN_RATES_30B, deployment="30b"), HERE / "l2_scan_30b.csv")


def stage_l2_30b() -> pd.DataFrame:
    """The main grid on the 30B deployment, at the knees its own scan gives."""
    rates, past = knees(pd.read_csv(HERE / "l2_scan_30b.csv"))
    print(f"  30b knees {rates}, past the knee {past}", flush=True)
    return run_jobs(l2_jobs(rates=rates, past_knee=past, deployment="30b"), HERE / "l2_30b.csv")


#: L3: one mix at its L2 knee rate, Poisson and Gamma; Llumnix-base against Llumnix with the
#: high priority's headroom (blocks per instance; 0 = engine priority scheduling alone).
L3_MIX = "sharegpt"
L3_CVS = (1.0, 4.0)
L3_HEADROOMS = (0, 64, 256, 1024)


def l3_jobs(rate=None, cvs=L3_CVS, headrooms=L3_HEADROOMS, seeds=serving.SEEDS,
            num_requests=serving.NUM_REQUESTS, mix=L3_MIX):
    rate = rate if rate is not None else L2_RATES[mix][0]
    points = [("llumnix-base", 0)] + [("llumnix", h) for h in headrooms]
    return [({"mix": mix, "policy": p, "headroom": h, "rate": rate, "cv": cv, "seed": seed},
             serving.l3_scenario(mix, p, h, rate, cv, seed, num_requests=num_requests), None)
            for cv in cvs for p, h in points for seed in seeds]


def stage_l3() -> pd.DataFrame:
    return run_jobs(l3_jobs(), HERE / "l3.csv")


#: L4: the step load of ``serving.STEP_RATES``; each policy's knob swept to trace cost against
#: P99 TTFT (scale-up freeness for the Llumnix scaler, KV-utilisation target for the reactive
#: one) at the default provisioning time, then the cold-start sweep at each default knob.
L4_MIX = "sharegpt"
L4_KNOBS = {"llumnix": (5.0, 10.0, 20.0), "infaas++": (5.0, 10.0, 20.0),
            "infaas+reactive": (0.5, 0.7, 0.85)}
L4_DEFAULT_KNOB = {"llumnix": 10.0, "infaas++": 10.0, "infaas+reactive": 0.7}
L4_PROVISION = 30.0
L4_COLD_SWEEP = (0.0, 120.0)


def l4_jobs(knobs=None, cold=L4_COLD_SWEEP, seeds=serving.SEEDS, mix=L4_MIX, keep_as="l4", **scenario_kw):
    """Every L4 run; the first seed at each policy's default knob keeps its timeseries as
    ``results/<keep_as>_<policy>_k<knob>_p<provisioning>_s<seed>.parquet`` for the figures."""
    knobs = knobs or L4_KNOBS
    points = [(p, k, L4_PROVISION) for p, ks in knobs.items() for k in ks]
    points += [(p, L4_DEFAULT_KNOB[p], c) for p in knobs for c in cold]
    jobs = []
    for p, k, c in points:
        for seed in seeds:
            keep = (str(RESULTS / f"{keep_as}_{p}_k{k:g}_p{c:g}_s{seed}.parquet")
                    if seed == seeds[0] and k == L4_DEFAULT_KNOB[p] else None)
            jobs.append(({"mix": mix, "policy": p, "knob": k, "provision_s": c, "seed": seed},
                         serving.l4_scenario(mix, p, k, c, seed, **scenario_kw), keep))
    return jobs


def stage_l4() -> pd.DataFrame:
    return run_jobs(l4_jobs(), HERE / "l4.csv")


def stage_l4steep() -> pd.DataFrame:
    """The same grid under the steeper step (peak 9 req/s), the first one run; its kept
    timeseries draw figures/l4_instances_steep.png."""
    return run_jobs(l4_jobs(rates=serving.STEP_RATES_STEEP, keep_as="l4steep"), HERE / "l4_steep.csv")


def stage_figures() -> pd.DataFrame:
    """The L2-L4 figures, from the CSVs (and L4's kept timeseries)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    FIGURES.mkdir(exist_ok=True)
    for csv, png, what in (("l2_scan.csv", "l2_scan.png", "16 x 7B"),
                           ("l2_scan_30b.csv", "l2_scan_30b.png", "4 x 30B TP 4")):
        if not (HERE / csv).exists():
            continue
        scan = pd.read_csv(HERE / csv)
        fig, axes = plt.subplots(1, scan["mix"].nunique(), figsize=(12, 3.6))
        for ax, (mix, part) in zip(axes, scan.groupby("mix", sort=False)):
            for policy, g in part.groupby("policy"):
                g = g.sort_values("rate")
                ax.plot(g.rate, g.ttft_p99, "o-", label=policy)
            ax.set_yscale("log")
            ax.set_title(f"{mix} ({what}, Poisson, seed 1)")
            ax.set_xlabel("rate (req/s)")
            ax.set_ylabel("P99 TTFT (s)")
            ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(FIGURES / png, dpi=110)
        plt.close(fig)

    l2 = pd.read_csv(HERE / "l2.csv")
    l2 = l2[l2.rate.isin([r for rs in L2_RATES.values() for r in rs])]
    fig, axes = plt.subplots(1, l2["mix"].nunique(), figsize=(12, 3.6))
    for ax, (mix, part) in zip(axes, l2.groupby("mix", sort=False)):
        means = part.groupby(["cv", "policy"]).ttft_p99.mean().unstack()
        means = means[[p for p in L2_POLICIES if p in means.columns]]
        means.plot.bar(ax=ax, logy=True, rot=0)
        ax.set_title(f"{mix}, {part.rate.iloc[0]:g} req/s")
        ax.set_xlabel("arrival CV (1 = Poisson)")
        ax.set_ylabel("P99 TTFT (s), mean of 3 seeds")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(FIGURES / "l2_ttft_cv.png", dpi=110)
    plt.close(fig)

    for prefix, png, load in (("l4", "l4_instances.png", "the step load"),
                              ("l4steep", "l4_instances_steep.png", "the steep step")):
        kept = sorted(RESULTS.glob(f"{prefix}_*_p30_s1.parquet"))
        if not kept:
            continue
        fig, ax = plt.subplots(figsize=(8, 3.6))
        for path in kept:
            ts = pd.read_parquet(path)
            ax.step(ts.time, ts.ready + ts.draining, where="post",
                    label=path.stem[len(prefix) + 1:].rsplit("_p30", 1)[0])
        ax.set_xlabel("time (s)")
        ax.set_ylabel("instances (ready + draining)")
        ax.set_title(f"L4: instances under {load} (seed 1, provisioning 30 s)")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(FIGURES / png, dpi=110)
        plt.close(fig)
    return pd.DataFrame()


STAGES: dict[str, Callable[[], pd.DataFrame]] = {"l1": stage_l1, "mixes": stage_mixes,
                                                  "l2scan": stage_l2scan, "l2": stage_l2,
                                                  "l2scan30b": stage_l2scan30b,
                                                  "l2_30b": stage_l2_30b,
                                                  "l3": stage_l3, "l4": stage_l4,
                                                  "l4steep": stage_l4steep,
                                                  "figures": stage_figures}


def _set_workers(workers: int) -> None:
    global WORKERS
    WORKERS = workers


def main(argv: list[str] | None = None) -> None:
    run_stages(STAGES, __doc__.split("\n\n")[0], 2, _set_workers, argv)


if __name__ == "__main__":
    main()
