"""Print the Llumnix experiment's tables (Markdown) from the CSVs that run.py writes.

    .venv/bin/python experiments/llumnix/tables.py          # every table whose CSV exists
    .venv/bin/python experiments/llumnix/tables.py l1       # one of: l1, mixes
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent


def _markdown(frame: pd.DataFrame) -> str:
    cells = [[str(v) for v in row] for row in frame.itertuples(index=False)]
    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines)


def table_l1() -> str:
    data = pd.read_csv(HERE / "l1.csv")
    out = []
    for model, part in data.groupby("model", sort=False):
        rows = []
        for tokens, group in part.groupby("tokens"):
            by_mode = {row["mode"]: row for _, row in group.iterrows()}
            live = by_mode["live"]
            row = {"tokens": f"{tokens // 1024}k", "ctx raised": "yes" if live.context_override else "no"}
            row["live downtime ms"] = f"{live.downtime_ms:.2f}"
            row["live stages (blocks)"] = f"{live.stages} ({live.stage_blocks})"
            row["live total ms"] = f"{live.total_ms:.1f}"
            row["live: α + final×block ms"] = (f"{live.alpha_ms:g} + {live.final_stage_blocks}"
                                               f"×{live.block_ms:.3f} = "
                                               f"{live.alpha_ms + live.final_stage_blocks * live.block_ms:.2f}")
            for mode in ("blocking", "recompute"):
                if mode in by_mode:
                    row[f"{mode} downtime ms"] = f"{by_mode[mode].downtime_ms:.1f}"
            if "blocking" in by_mode:
                b = by_mode["blocking"]
                row["blocking: α + blocks×block ms"] = (f"{b.alpha_ms:g} + {b.blocks_copied}×"
                                                        f"{b.block_ms:.3f} = "
                                                        f"{b.alpha_ms + b.blocks_copied * b.block_ms:.1f}")
            row["live added e2e ms"] = f"{live.added_e2e_ms:.1f}"
            rows.append(row)
        out.append(f"**{model}** (A10, TP 1, one request; deterministic, one run per case, "
                   f"seed-independence checked)\n\n{_markdown(pd.DataFrame(rows))}")
    return "\n\n".join(out)


def table_mixes() -> str:
    data = pd.read_csv(HERE / "mixes.csv")
    rows = []
    for _, m in data.iterrows():
        rows.append({
            "mix": m.mix,
            "input: paper / exact / sample": (f"{m.paper_prompt_mean:g} / {m.exact_prompt_mean:.1f}"
                                              f" / {m.sample_prompt_mean:.1f}"),
            "output: paper / exact / sample": (f"{m.paper_output_mean:g} / {m.exact_output_mean:.1f}"
                                               f" / {m.sample_output_mean:.1f}"),
            "input distribution": m.prompt_dist,
            "output distribution": m.output_dist,
        })
    draws = int(data.draws.iloc[0])
    return f"Sample means over {draws:,} requests drawn by chironsim (seed 0)\n\n" + _markdown(pd.DataFrame(rows))


POLICY_ORDER = ["round_robin", "infaas++", "llumnix-base", "llumnix"]


def _f(x: float, digits: int = 2) -> str:
    if pd.isna(x):
        return "–"
    if abs(x) >= 100:
        return f"{x:.0f}"
    return f"{x:.{digits}f}"


def _mean_range(group: pd.Series, digits: int = 2) -> str:
    """Mean over seeds with the seeds' range."""
    if len(group) == 1:
        return _f(group.iloc[0], digits)
    return f"{_f(group.mean(), digits)} [{_f(group.min(), digits)}–{_f(group.max(), digits)}]"


def table_l2scan(csv: str = "l2_scan.csv") -> str:
    data = pd.read_csv(HERE / csv)
    out = []
    for mix, part in data.groupby("mix", sort=False):
        rows = []
        for rate, g in part.groupby("rate"):
            by = {r.policy: r for r in g.itertuples()}
            row = {"rate req/s": f"{rate:g}"}
            for p in ("infaas++", "llumnix"):
                if p in by:
                    row[f"{p} P99 TTFT s"] = _f(by[p].ttft_p99)
                    row[f"{p} preempt."] = int(by[p].preemptions)
            if "llumnix" in by:
                row["llumnix migrations"] = int(by["llumnix"].migrations_done)
            if {"infaas++", "llumnix"} <= set(by):
                row["P99 TTFT ratio"] = _f(by["infaas++"].ttft_p99 / by["llumnix"].ttft_p99)
            rows.append(row)
        out.append(f"**{mix}** (Poisson, seed 1, 10k requests)\n\n{_markdown(pd.DataFrame(rows))}")
    return "\n\n".join(out)


L2_COLUMNS = [("P50 TTFT s", "ttft_p50", 3), ("P99 TTFT s", "ttft_p99", 2),
              ("P99 TPOT ms", "tpot_p99_ms", 1), ("P99 max-ITL s", "itl_max_p99", 2),
              ("preemptions", "preemptions", 0), ("recomputed tok/req", "recomputed_tokens_per_req", 1),
              ("fragmentation %", "fragmentation_pct", 2), ("migrations", "migrations_done", 0)]


def _l2_frame(csv: str = "l2.csv") -> pd.DataFrame:
    data = pd.read_csv(HERE / csv)
    data["tpot_p99_ms"] = data.tpot_p99 * 1e3
    data["fragmentation_pct"] = data.fragmentation * 100
    return data


def table_l2(csv: str = "l2.csv") -> str:
    """Per mix, rate and CV: each policy's metrics, mean over seeds [min–max]."""
    data = _l2_frame(csv)
    out = []
    for (mix, rate, cv), part in data.groupby(["mix", "rate", "cv"], sort=False):
        rows = []
        for policy in POLICY_ORDER:
            g = part[part.policy == policy]
            if g.empty:
                continue
            row = {"policy": policy}
            for label, col, digits in L2_COLUMNS:
                row[label] = _mean_range(g[col], digits)
            rows.append(row)
        seeds = part.seed.nunique()
        arrival = "Poisson" if cv == 1 else f"Gamma CV {cv:g}"
        out.append(f"**{mix}, {rate:g} req/s, {arrival}** ({seeds} seeds; mean [min–max]; means run: "
                   f"input {part.prompt_mean.mean():.0f}, output {part.output_mean.mean():.0f})\n\n"
                   f"{_markdown(pd.DataFrame(rows))}")
    return "\n\n".join(out)


def l2_ratios(csv: str = "l2.csv") -> pd.DataFrame:
    """INFaaS++ ÷ Llumnix per (mix, rate, CV), from seed means: the paper's claims' quantities."""
    data = _l2_frame(csv)
    means = data.groupby(["mix", "rate", "cv", "policy"]).mean(numeric_only=True)
    rows = []
    for (mix, rate, cv), part in means.groupby(level=[0, 1, 2], sort=False):
        part = part.droplevel([0, 1, 2])
        if not {"infaas++", "llumnix"} <= set(part.index):
            continue
        inf, llx = part.loc["infaas++"], part.loc["llumnix"]
        rows.append({
            "mix": mix, "rate": rate, "cv": cv,
            "ttft_p99_ratio": inf.ttft_p99 / llx.ttft_p99,
            "ttft_p50_ratio": inf.ttft_p50 / llx.ttft_p50,
            "tpot_p99_ratio": inf.tpot_p99 / llx.tpot_p99,
            "itl_max_p99_ratio": inf.itl_max_p99 / llx.itl_max_p99,
            "preemption_loss_change": ((llx.recomputed_tokens_per_req - inf.recomputed_tokens_per_req)
                                       / inf.recomputed_tokens_per_req
                                       if inf.recomputed_tokens_per_req > 0 else float("nan")),
            "frag_infaas_pct": inf.fragmentation * 100, "frag_llumnix_pct": llx.fragmentation * 100,
            "migrations_llumnix": llx.migrations_done,
        })
    return pd.DataFrame(rows)


def table_l2_ratios(csv: str = "l2.csv") -> str:
    r = l2_ratios(csv)
    rows = [{"mix": x.mix, "rate": f"{x.rate:g}", "arrival": "Poisson" if x.cv == 1 else f"Gamma CV {x.cv:g}",
             "P99 TTFT ×": _f(x.ttft_p99_ratio), "P50 TTFT ×": _f(x.ttft_p50_ratio),
             "P99 TPOT ×": _f(x.tpot_p99_ratio), "P99 max-ITL ×": _f(x.itl_max_p99_ratio),
             "preemption loss change": ("–" if pd.isna(x.preemption_loss_change)
                                        else f"{x.preemption_loss_change * 100:+.0f} %"),
             "fragmentation % INFaaS++ → Llumnix": f"{_f(x.frag_infaas_pct)} → {_f(x.frag_llumnix_pct)}",
             "Llumnix migrations": _f(x.migrations_llumnix, 0)}
            for x in r.itertuples()]
    summary = (f"P99 TTFT INFaaS++ ÷ Llumnix over these {len(r)} points: max {r.ttft_p99_ratio.max():.2f}×, "
               f"mean {r.ttft_p99_ratio.mean():.2f}×; P99 TPOT: max {r.tpot_p99_ratio.max():.2f}×; "
               f"preemption loss change, mean over points with any: "
               f"{r.preemption_loss_change.mean() * 100:+.0f} %; fragmentation mean "
               f"{r.frag_infaas_pct.mean():.2f} % → {r.frag_llumnix_pct.mean():.2f} %")
    return ("INFaaS++ ÷ Llumnix from seed means (×: > 1 means Llumnix is better)\n\n"
            + _markdown(pd.DataFrame(rows)) + "\n\n" + summary)


def table_l3() -> str:
    data = pd.read_csv(HERE / "l3.csv")
    out = []
    for (rate, cv), part in data.groupby(["rate", "cv"], sort=False):
        base = part[part.policy == "llumnix-base"]
        base_m = base.mean(numeric_only=True)
        rows = []
        for (policy, h), g in part.groupby(["policy", "headroom"], sort=False):
            m = g.mean(numeric_only=True)
            rows.append({
                "policy": policy, "headroom blocks": "–" if policy == "llumnix-base" else int(h),
                "high mean e2e s": _mean_range(g.high_e2e_mean), "high P99 TTFT s": _mean_range(g.high_ttft_p99),
                "high mean TPOT ms": _mean_range(g.high_tpot_mean * 1e3, 1),
                "high e2e speed-up vs base": _f(base_m.high_e2e_mean / m.high_e2e_mean),
                "high P99 TTFT speed-up": _f(base_m.high_ttft_p99 / m.high_ttft_p99),
                "normal mean e2e s": _mean_range(g.normal_e2e_mean), "normal P99 TTFT s": _mean_range(g.normal_ttft_p99),
                "migrations": _f(m.migrations_done, 0),
            })
        arrival = "Poisson" if cv == 1 else f"Gamma CV {cv:g}"
        out.append(f"**{part['mix'].iloc[0]}, {rate:g} req/s, {arrival}, 10 % high priority** "
                   f"({part.seed.nunique()} seeds; mean [min–max])\n\n{_markdown(pd.DataFrame(rows))}")
    return "\n\n".join(out)


def l4_frame(csv: str = "l4.csv") -> pd.DataFrame:
    data = pd.read_csv(HERE / csv)
    return (data.groupby(["policy", "knob", "provision_s"])
            .agg(ttft_p99=("ttft_p99", "mean"), ttft_p99_min=("ttft_p99", "min"), ttft_p99_max=("ttft_p99", "max"),
                 ttft_p50=("ttft_p50", "mean"), tpot_p99=("tpot_p99", "mean"),
                 gpu_hours=("gpu_hours", "mean"), instances_max=("instances_max", "mean"),
                 migrations=("migrations_done", "mean"), preemptions=("preemptions", "mean"),
                 seeds=("seed", "nunique"))
            .reset_index())


def table_l4(csv: str = "l4.csv") -> str:
    agg = l4_frame(csv)
    rows = [{"policy": x.policy, "knob": f"{x.knob:g}", "provision s": f"{x.provision_s:g}",
             "instance-hours": _f(x.gpu_hours), "P99 TTFT s": f"{_f(x.ttft_p99)} [{_f(x.ttft_p99_min)}–{_f(x.ttft_p99_max)}]",
             "P50 TTFT s": _f(x.ttft_p50, 3), "P99 TPOT ms": _f(x.tpot_p99 * 1e3, 1),
             "peak instances": _f(x.instances_max, 1), "migrations": _f(x.migrations, 0),
             "preemptions": _f(x.preemptions, 0), "seeds": x.seeds}
            for x in agg.itertuples()]
    return ("knob: scale-up freeness threshold (scale-down 6×) for llumnix / infaas++; KV-utilisation "
            "target for infaas+reactive. Mean over seeds; P99 TTFT [min–max]\n\n" + _markdown(pd.DataFrame(rows)))


def l4_matched(csv: str = "l4.csv", provision: float = 30.0) -> pd.DataFrame:
    """For each Llumnix knob: each baseline's instance-hours at Llumnix's P99 TTFT, linearly
    interpolated along the baseline's knob sweep (seed means; only inside its range)."""
    agg = l4_frame(csv)
    agg = agg[agg.provision_s == provision]
    rows = []
    for x in agg[agg.policy == "llumnix"].itertuples():
        row = {"llumnix knob": f"{x.knob:g}", "llumnix P99 TTFT s": _f(x.ttft_p99),
               "llumnix instance-hours": _f(x.gpu_hours)}
        for base in ("infaas++", "infaas+reactive"):
            curve = agg[agg.policy == base].sort_values("ttft_p99")
            lo, hi = curve.ttft_p99.min(), curve.ttft_p99.max()
            if lo <= x.ttft_p99 <= hi:
                hours = float(np.interp(x.ttft_p99, curve.ttft_p99, curve.gpu_hours))
                row[f"{base} h at same P99"] = _f(hours)
                row[f"saving vs {base}"] = f"{(1 - x.gpu_hours / hours) * 100:+.0f} %"
            else:
                row[f"{base} h at same P99"] = f"outside ({_f(lo)}–{_f(hi)} s)"
                row[f"saving vs {base}"] = "–"
        rows.append(row)
    return pd.DataFrame(rows)


def table_l4_matched() -> str:
    return ("Instance-hours at matched P99 TTFT (provisioning 30 s; baseline interpolated along its "
            "knob sweep)\n\n" + _markdown(l4_matched()))


TABLES = {"l1": ("l1.csv", table_l1), "mixes": ("mixes.csv", table_mixes),
          "l2scan": ("l2_scan.csv", table_l2scan), "l2": ("l2.csv", table_l2),
          "l2ratios": ("l2.csv", table_l2_ratios), "l3": ("l3.csv", table_l3), "l4": ("l4.csv", table_l4),
          "l4matched": ("l4.csv", table_l4_matched),
          "l4steep": ("l4_steep.csv", lambda: table_l4("l4_steep.csv")),
          "l2scan30b": ("l2_scan_30b.csv", lambda: table_l2scan("l2_scan_30b.csv")),
          "l2_30b": ("l2_30b.csv", lambda: table_l2("l2_30b.csv")),
          "l2ratios30b": ("l2_30b.csv", lambda: table_l2_ratios("l2_30b.csv"))}


def main(argv: list[str]) -> None:
    for name in argv or list(TABLES):
        csv, printer = TABLES[name]
        if not (HERE / csv).exists():
            print(f"({name}: {csv} not found; run run.py --stage {name})\n")
            continue
        print(f"### {name}\n\n{printer()}\n")


if __name__ == "__main__":
    main(sys.argv[1:])
