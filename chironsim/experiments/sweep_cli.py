"""The ``chironsim sweep`` command: run a spec's grid, resume it, print the aggregate.

Exit status: 0 when every point has a result, 1 when some runs failed (they are recorded and
retried by running the same command again), 2 for a mistake in the spec or the options,
130 when interrupted (finished runs are kept; the same command resumes).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from chironsim.cli import int_at_least

EXIT_FAILED_RUNS = 1
EXIT_INTERRUPTED = 130


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``sweep`` subcommand."""
    p = subparsers.add_parser(
        "sweep", help="run a grid of scenarios (policies × loads × seeds × any key), resumably")
    p.add_argument("spec", help="sweep spec YAML file")
    p.add_argument("--executor", choices=["local", "ray"], default="local",
                   help="local processes (default) or Ray tasks")
    p.add_argument("--workers", type=int_at_least(1),
                   help="parallel runs (default: CPU count; 1 runs in this process)")
    p.add_argument("--out", help="sweep folder (default results/<name>)")
    p.add_argument("--address", help="Ray cluster address (with --executor ray)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_sweep)


def _cmd_sweep(args: argparse.Namespace) -> int:
    from chironsim.experiments.aggregate import format_sweep_summary
    from chironsim.experiments.executors import check_executor
    from chironsim.experiments.sweep import RUNS_TABLE, plan_sweep, run_sweep

    plan = plan_sweep(args.spec)
    check_executor(args.executor, args.workers, args.address)
    out = Path(args.out) if args.out else Path("results") / plan.spec.name
    started = time.perf_counter()
    try:
        result = run_sweep(plan, out, executor=args.executor, workers=args.workers,
                           address=args.address, progress=not args.quiet)
    except KeyboardInterrupt:
        print(f"\ninterrupted: finished runs are kept in {out}; run the same command to resume",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    wall = time.perf_counter() - started
    counts = result.point_counts()
    total = sum(counts[s] for s in ("ok", "failed", "skipped"))
    print(format_sweep_summary(result.summary, plan.axes, plan.metrics))
    damaged = f", {len(result.damaged)} rerun as their folder was damaged" if result.damaged else ""
    print(f"\n{total} points ({counts['ok']} ok, {counts['resumed']} of them resumed{damaged}, "
          f"{counts['failed']} failed) in {wall:.1f} wall s; results in {out}")
    if counts["failed"]:
        failed = result.failed
        first = failed.iloc[0]
        causes = failed["error"].fillna("").str.split(":").str[0].value_counts()
        by_cause = ", ".join(f"{cause or 'unknown'} ×{n}" for cause, n in causes.items())
        print(f"error: {counts['failed']} of {total} runs failed ({by_cause}; see "
              f"{out / RUNS_TABLE} and {out / 'runs'}/<point_id>.error.json; run the same "
              f"command to retry them); first: {first['point_id']}: {first['error']}",
              file=sys.stderr)
        return EXIT_FAILED_RUNS
    return 0
