"""Print the Markdown tables of REPORT.md from the study's CSVs (so no number is copied by hand).

    python experiments/chiron/tables.py            # the 8B study
    python experiments/chiron/tables.py --model 70b

Reads ``aggregate[_<model>].csv``, ``runs[_<model>].csv`` and ``llumnix_tuning[_<model>].csv``
written by ``run.py``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import STUDIES, Study  # noqa: E402


def _pm(mean: float, ci: float, digits: int) -> str:
    if pd.isna(ci):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {ci:.{digits}f}"


def results_table(study: Study) -> str:
    agg = pd.read_csv(study.table("aggregate", "csv"))
    lines = ["| load | policy | interactive SLO | batch by deadline | interactive misses: TTFT / TPOT "
             "| interactive TTFT p99 (s) | GPU-hours | goodput (M tok/GPU-h) | cold starts |",
             "|---|---|---|---|---|---|---|---|---|"]
    for load in study.loads:
        for policy in study.policies:
            row = agg[(agg.load == load) & (agg.policy == policy)]
            if row.empty:
                continue
            r = row.iloc[0]
            goodput = r.goodput_per_gpu_hour / 1e6
            lines.append(
                f"| {load} | {policy} | {_pm(r.slo_interactive, r.slo_interactive_ci95, 3)} "
                f"| {_pm(r.slo_batch, r.slo_batch_ci95, 3)} "
                f"| {r.interactive_miss_ttft:,.0f} / {r.interactive_miss_tpot:,.0f} "
                f"| {r.ttft_p99_interactive:.1f} "
                f"| {_pm(r.gpu_hours, r.gpu_hours_ci95, 2)} "
                f"| {_pm(goodput, r.goodput_per_gpu_hour_ci95 / 1e6, 2 if goodput >= 1 else 3)} "
                f"| {r.cold_starts:.1f} |")
    return "\n".join(lines)


def pools_table(study: Study, policies: tuple[str, ...]) -> str:
    runs = pd.read_csv(study.table("runs", "csv"))
    per_run = runs[runs.request_class == "all"]
    pools = sorted(c for c in per_run.columns if c.startswith("gpu_hours_"))
    names = [c.removeprefix("gpu_hours_") for c in pools]
    lines = ["| load | policy | " + " | ".join(names) + " | all-request attainment |",
             "|---|---|" + "---|" * len(names) + "---|"]
    for load in study.loads:
        for policy in policies:
            sub = per_run[(per_run.load == load) & (per_run.policy == policy)]
            if sub.empty:
                continue
            cells = [("—" if sub[c].isna().all() else f"{sub[c].mean():.2f}") for c in pools]
            lines.append(f"| {load} | {policy} | " + " | ".join(cells)
                         + f" | {sub.slo_attainment.mean():.3f} |")
    return "\n".join(lines)


def seeds_table(study: Study, policies: tuple[str, ...]) -> str:
    """Interactive attainment of every seed, to show the spread behind the intervals."""
    runs = pd.read_csv(study.table("runs", "csv"))
    inter = runs[runs.request_class == "interactive"]
    seeds = sorted(inter.seed.unique())
    lines = ["| load | policy | " + " | ".join(f"seed {s}" for s in seeds) + " |",
             "|---|---|" + "---|" * len(seeds)]
    for load in study.loads:
        for policy in policies:
            sub = inter[(inter.load == load) & (inter.policy == policy)].set_index("seed")
            if sub.empty:
                continue
            cells = [f"{sub.slo_attainment.get(s, float('nan')):.3f}" for s in seeds]
            lines.append(f"| {load} | {policy} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def tuning_table(study: Study) -> str:
    """Every point of llumnix-tuned's grid at every load (seed 1), the chosen one in bold."""
    rows = pd.read_csv(study.table("llumnix_tuning", "csv"))
    lines = ["| load | point (dispatch-cap share) | interactive SLO | batch by deadline "
             "| GPU-hours | goodput (M tok/GPU-h) |", "|---|---|---|---|---|---|"]
    for load in study.loads:
        for r in rows[rows.load == load].itertuples():
            name = f"**{r.point}**" if r.chosen else r.point
            lines.append(f"| {load} | {name} | {r.slo_interactive:.3f} | {r.slo_batch:.3f} "
                         f"| {r.gpu_hours:.2f} | {r.goodput_per_gpu_hour / 1e6:.3f} |")
    return "\n".join(lines)


#: The Chiron variants the Discussion compares: as specified, and the best constants found.
CHIRONS = ("chiron", "chiron-bmin64-itlbp")
BASELINES = ("reactive", "static", "llumnix", "llumnix-tuned")


def _all_requests(study: Study) -> pd.Series:
    runs = pd.read_csv(study.table("runs", "csv"))
    per_run = runs[runs.request_class == "all"]
    return per_run.groupby(["policy", "load"]).slo_attainment.mean()


def comparison_table(study: Study) -> str:
    """Each Chiron variant against each baseline, per load, from the seed means: interactive
    attainment in points, and relative changes of all-request attainment, GPU-hours and goodput
    per GPU-hour (the quantities of the paper's claims)."""
    agg = pd.read_csv(study.table("aggregate", "csv")).set_index(["policy", "load"])
    overall = _all_requests(study)
    lines = ["| load | Chiron variant | vs | interactive (points) | all requests | batch "
             "| GPU-hours | goodput per GPU-hour |", "|---|---|---|---|---|---|---|---|"]

    def rel(a: float, b: float) -> str:
        return f"{(a / b - 1) * 100:+.0f} %" if b else "—"
    for load in study.loads:
        for chiron in CHIRONS:
            for base in BASELINES:
                if (chiron, load) not in agg.index or (base, load) not in agg.index:
                    continue
                c, b = agg.loc[(chiron, load)], agg.loc[(base, load)]
                lines.append(
                    f"| {load} | {chiron} | {base} "
                    f"| {(c.slo_interactive - b.slo_interactive) * 100:+.1f} "
                    f"| {rel(overall[(chiron, load)], overall[(base, load)])} "
                    f"| {rel(c.slo_batch, b.slo_batch)} "
                    f"| {rel(c.gpu_hours, b.gpu_hours)} "
                    f"| {rel(c.goodput_per_gpu_hour, b.goodput_per_gpu_hour)} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=tuple(STUDIES), default="8b")
    args = parser.parse_args()
    study = STUDIES[args.model]
    print(results_table(study), end="\n\n")
    print(pools_table(study, study.policies), end="\n\n")
    print(seeds_table(study, study.policies), end="\n\n")
    print(comparison_table(study), end="\n\n")
    if study.table("llumnix_tuning", "csv").exists():
        print(tuning_table(study))


if __name__ == "__main__":
    main()
