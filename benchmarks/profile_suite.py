"""Profile every case of the benchmark suite (run_all.py) and list where its time goes.

Each case runs once under cProfile, in memory (no results folder), the day and the week for
their first simulated hour; the report gives, per case, the profiled seconds of ``run()``, the
function calls, and the top functions by own time. ``--tree`` points at another checkout of
the repository so that the same cases can be profiled on an older commit for a before/after
table (docs/performance.md, "Profiles of the whole suite")::

    python benchmarks/profile_suite.py --top 6 --json > after.json
    git worktree add --detach /tmp/wt-old <rev>
    PYTHONPATH=/tmp/wt-old python benchmarks/profile_suite.py --tree /tmp/wt-old --json > before.json
    python benchmarks/profile_suite.py --compare before.json after.json   # the markdown table

cProfile charges every Python call, so code made of many small calls looks slower than it
is; use the shares, not the seconds, and compare profiles with profiles.
"""

from __future__ import annotations

import argparse
import cProfile
import importlib.util
import json
import pstats
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def _suite(tree: Path):
    """The run_all module of ``tree`` (its case builders and their paths)."""
    spec = importlib.util.spec_from_file_location("run_all_profiled", tree / "benchmarks" / "run_all.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _short(key: tuple[str, int, str]) -> str:
    """``package/module.py:function`` for project code, ``library:function`` otherwise."""
    filename, _, function = key
    path = Path(filename)
    if "chironsim" in path.parts:
        parts = path.parts[path.parts.index("chironsim") + 1:]
        return f"{'/'.join(parts)}:{function}"
    if "site-packages" in path.parts:
        return f"{path.parts[path.parts.index('site-packages') + 1]}:{function}"
    return f"{path.name}:{function}" if filename != "~" else function


def profile_case(suite, name: str, top: int) -> dict[str, Any]:
    """Run one case under cProfile; its profiled seconds, calls and top functions by own time."""
    from chironsim.experiments.runner import run

    config = suite.CASES[name][1](name in suite.SHORTENED)
    profiler = cProfile.Profile()
    started = time.perf_counter()
    profiler.enable()
    result = run(config, base_dir=suite.REPO_ROOT)
    profiler.disable()
    wall = time.perf_counter() - started
    stats = pstats.Stats(profiler)
    total = sum(row[2] for row in stats.stats.values())
    rows = sorted(stats.stats.items(), key=lambda item: item[1][2], reverse=True)[:top]
    return {
        "case": name, "requests": int(result.manifest["requests"]), "profiled_s": wall,
        "calls": int(sum(row[1] for row in stats.stats.values())),
        "top": [{"function": _short(key), "own_s": row[2], "share": row[2] / total, "calls": row[1]}
                for key, row in rows],
    }


def compare(before: dict[str, Any], after: dict[str, Any]) -> str:
    """Markdown: per case, profiled seconds and calls before -> after, and each side's top."""
    old = {c["case"]: c for c in before["cases"]}
    lines = ["| case | profiled s (before → after) | calls (before → after) | top by own time, before | top by own time, after |",
             "|---|---|---|---|---|"]

    def tops(case: dict[str, Any]) -> str:
        return "<br>".join(f"{row['function']} {100 * row['share']:.0f} %" for row in case["top"])

    for case in after["cases"]:
        prior = old.get(case["case"])
        if prior is None:
            continue
        lines.append(f"| {case['case']} | {prior['profiled_s']:.2f} → {case['profiled_s']:.2f} | "
                     f"{prior['calls'] / 1e6:.2f}M → {case['calls'] / 1e6:.2f}M | {tops(prior)} | {tops(case)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", type=Path, default=HERE.parent,
                        help="checkout whose benchmarks/run_all.py defines the cases (default: this one)")
    parser.add_argument("--cases", default=None, help="comma-separated subset of run_all's cases")
    parser.add_argument("--top", type=int, default=6, help="functions listed per case")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("BEFORE", "AFTER"),
                        help="print the markdown comparison of two --json outputs and exit")
    args = parser.parse_args(argv)
    if args.compare:
        before, after = (json.loads(p.read_text()) for p in args.compare)
        print(compare(before, after))
        return
    suite = _suite(args.tree.resolve())
    names = args.cases.split(",") if args.cases else list(suite.CASES)
    unknown = [n for n in names if n not in suite.CASES]
    if unknown:
        parser.error(f"unknown case(s) {', '.join(unknown)}; known: {', '.join(suite.CASES)}")
    cases = []
    for name in names:
        cases.append(profile_case(suite, name, args.top))
        print(f"{name}: {cases[-1]['profiled_s']:.2f} s profiled", file=sys.stderr, flush=True)
    report = {"tree": str(args.tree.resolve()), "cases": cases}
    if args.json:
        print(json.dumps(report))
    else:
        for case in cases:
            print(f"\n{case['case']} ({case['requests']:,} requests): {case['profiled_s']:.2f} s, "
                  f"{case['calls'] / 1e6:.2f}M calls")
            for row in case["top"]:
                print(f"  {100 * row['share']:5.1f} %  {row['own_s']:7.3f} s  {row['calls']:>9,}  {row['function']}")


if __name__ == "__main__":
    main()
