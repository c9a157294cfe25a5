"""The analysis subcommands: ``compare``, ``plot`` and ``check`` (DESIGN.md §7).

Registered by :mod:`chironsim.cli` through ``COMMAND_MODULES``; the work is done in
:mod:`chironsim.experiments.compare` and :mod:`chironsim.experiments.check`, which notebooks can
call directly.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from chironsim.errors import ChironError


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _cmd_compare(args: argparse.Namespace) -> int:
    from chironsim.experiments.compare import compare, comparison_table, format_comparison

    table = comparison_table(compare(args.dirs, args.metrics) if args.metrics
                             else compare(args.dirs))
    print(format_comparison(table))
    if args.csv:
        try:
            table.to_csv(args.csv, index=False)
        except OSError as err:
            raise ChironError(f"{args.csv}: cannot write the table ({err.strerror or err})") from None
        print(f"\ntable written to {args.csv}")
    return 0


def _cmd_plot(args: argparse.Namespace) -> int:
    from chironsim.experiments.compare import write_folder_plots

    at: Any = args.at
    if at is not None:
        try:
            at = float(at)
        except ValueError:
            pass  # a non-numeric load value (unusual, but matched as text)
    try:
        paths = write_folder_plots(args.dir, args.out, x=args.x, at=at)
    except OSError as err:
        raise ChironError(f"{args.out or Path(args.dir) / 'plots'}: cannot write the figures "
                          f"({err.strerror or err})") from None
    for path in paths:
        print(path)
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    from chironsim.experiments.check import check

    return check(args.path, update=args.update, tolerance_scale=args.tolerance_scale)


def register(subparsers: Any) -> None:
    """Add ``compare``, ``plot`` and ``check`` to the ``chironsim`` command."""
    p = subparsers.add_parser(
        "compare", help="side-by-side table of result or sweep folders",
        description="One column per run (or per aggregated sweep point, mean ± CI half-width); "
        "rows per class: SLO attainment, TTFT and TPOT p50/p99; then GPU-hours and goodput.")
    p.add_argument("dirs", nargs="+", metavar="DIR", help="result folder or sweep folder")
    p.add_argument("--csv", metavar="FILE", help="also write the table as CSV")
    p.add_argument("--metrics", nargs="+", metavar="NAME",
                   help="per-class summary metrics to show instead of the default (e.g. "
                   "ttft_p999 itl_p99 itl_p999 queue_p99)")
    p.set_defaults(func=_cmd_compare)

    p = subparsers.add_parser(
        "plot", help="figures of a result or sweep folder",
        description="A result folder gets the standard per-run figures. A sweep folder gets SLO "
        "attainment and GPU-hours vs load per policy (with confidence bands), and TTFT/TPOT CDFs "
        "and instances over time per policy at one load.")
    p.add_argument("dir", help="result folder or sweep folder")
    p.add_argument("--out", help="folder for the PNGs (default DIR/plots)")
    p.add_argument("--x", metavar="AXIS",
                   help="sweep axis for the x-axis (default: the axis named like '*rate*')")
    p.add_argument("--at", metavar="VALUE",
                   help="load value for the CDFs and instance plots (default: the largest)")
    p.set_defaults(func=_cmd_plot)

    p = subparsers.add_parser(
        "check", help="run pinned regression scenarios against their baselines",
        description="Simulate each regression file's scenario and compare its summary with the "
        "pinned baseline. Exit status 1 when a metric leaves its tolerance band, 2 for an "
        "invalid file.")
    p.add_argument("path", help="regression YAML file or a folder of them")
    p.add_argument("--update", action="store_true",
                   help="rewrite the baseline values with the new results (deliberately)")
    p.add_argument("--tolerance-scale", type=_positive_float, default=1.0, metavar="F",
                   help="multiply every tolerance by F (default 1)")
    p.set_defaults(func=_cmd_check)
