"""Print the Llumnix experiment's tables (Markdown) from the CSVs that run.py writes.

    .venv/bin/python experiments/llumnix/tables.py          # every table whose CSV exists
    .venv/bin/python experiments/llumnix/tables.py l1       # one of: l1, mixes
"""

from __future__ import annotations

import sys
from pathlib import Path

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


TABLES = {"l1": ("l1.csv", table_l1), "mixes": ("mixes.csv", table_mixes)}


def main(argv: list[str]) -> None:
    for name in argv or list(TABLES):
        csv, printer = TABLES[name]
        if not (HERE / csv).exists():
            print(f"({name}: {csv} not found; run run.py --stage {name})\n")
            continue
        print(f"### {name}\n\n{printer()}\n")


if __name__ == "__main__":
    main(sys.argv[1:])
