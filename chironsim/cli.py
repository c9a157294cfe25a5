"""The ``chironsim`` command.

User mistakes (a bad key, a missing file, a malformed trace line) print one ``error:`` block
and exit with status 2; nothing is written. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from chironsim.errors import ChironError, RunLimitError
from chironsim.limits import MAX_SEED

EXIT_USER_ERROR = 2

#: Modules that add subcommands: each has ``register(subparsers)`` which adds its parser(s) and
#: sets ``func`` to a handler ``(args) -> int``. Keeps experiment-level commands in their own
#: modules instead of growing this file.
COMMAND_MODULES = (
    "chironsim.experiments.analysis_cli",
    "chironsim.experiments.sweep_cli",
)


def _cmd_run(args: argparse.Namespace) -> int:
    from chironsim.experiments.config import load_config
    from chironsim.experiments.runner import run
    from chironsim.metrics.format import format_summary

    overrides = list(args.set or [])
    if args.seed is not None:
        overrides.append(f"seed={args.seed}")
    config, base_dir = load_config(args.config, overrides)
    out = Path(args.out) if args.out else Path("results") / config.name
    _check_out_dir(out)
    bar = None
    if not args.quiet:
        from tqdm import tqdm

        bar = tqdm(total=None, unit="sim s", desc=config.name, file=sys.stderr,
                   bar_format="{desc}: {n:.0f} simulated s [{elapsed}, {rate_fmt}]")

    def progress(now: float, _estimate: float) -> None:
        if bar is not None:
            bar.update(now - bar.n)

    fmt = args.format or config.output.format
    # The folder is written as the run goes (requests flushed to it, bounded memory), plots
    # included, into a temporary renamed at the end: it appears complete or not at all.
    try:
        result = run(config, base_dir, progress=progress, out=out, fmt=fmt,
                     plots=config.output.plots and not args.no_plots)
    except RunLimitError as err:  # found while running: the message names the key, not the file
        raise RunLimitError(f"{args.config}: {err}") from None
    except OSError as err:  # permissions, a full disk: the run has removed its partial copy
        raise ChironError(f"{out}: cannot write the results folder ({err.strerror or err})") from None
    finally:
        if bar is not None:
            bar.close()
    path = out
    print(format_summary(result.summary))
    m = result.manifest
    print(f"\n{m['requests']} requests, {m['sim_end_s']:.0f} simulated s in "
          f"{m['wall_seconds']:.1f} wall s; results in {path}")
    return 0


def _check_out_dir(out: Path) -> None:
    """Refuse an unusable ``--out`` before simulating rather than after; the store checks again."""
    from chironsim.metrics.store import check_replaceable

    check_replaceable(out)
    existing = next((p for p in out.absolute().parents if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise ChironError(f"{out}: cannot create the results folder, {existing} is a file")


def int_at_least(minimum: int, maximum: int | None = None):
    """An argparse type for whole numbers in [``minimum``, ``maximum``], with a message a
    person can act on."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be {minimum} or more, got {value}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"must be at most {maximum}, got {value}")
        return value

    return parse


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from chironsim.catalog import get_gpu
    from chironsim.perf.calibrate import calibrate_command

    if args.gpu is not None:
        try:
            get_gpu(args.gpu)
        except ChironError as err:
            raise ChironError(f"--gpu: {err}") from None
    print(calibrate_command(args.profiles, args.gpu, args.write))
    return 0


def _cmd_traces(args: argparse.Namespace) -> int:
    from chironsim.workload import tracetools

    if args.traces_cmd == "stats":
        path = Path(args.path)
        if not path.is_file():
            raise ChironError(f"{path}: trace file {'is not a file' if path.exists() else 'not found'}")
        stats = tracetools.trace_stats(path, args.format)
        width = max(len(k) for k in stats)
        for key, value in stats.items():
            print(f"{key:<{width}}  {value}")
    elif args.traces_cmd == "download":
        path = tracetools.download_trace(args.name, Path(args.dest))
        print(f"downloaded {args.name} to {path}")
    elif args.traces_cmd == "list":
        for name, entry in tracetools.known_traces().items():
            print(f"{name:<24} {entry}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chironsim", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p_run = sub.add_parser("run", help="simulate one scenario and write its results")
    p_run.add_argument("config", help="scenario YAML file")
    p_run.add_argument("--set", action="append", metavar="KEY=VALUE",
                       help="override a config key (dotted path), e.g. cluster.pools.default.instances=8")
    p_run.add_argument("--out", help="results folder (default results/<name>)")
    p_run.add_argument("--seed", type=int_at_least(0, MAX_SEED),
                       help="random seed (overrides the config's)")
    p_run.add_argument("--format", choices=["parquet", "csv"], help="table format")
    p_run.add_argument("--no-plots", action="store_true", help="skip the standard figures")
    p_run.add_argument("--quiet", action="store_true", help="no progress bar")
    p_run.set_defaults(func=_cmd_run)

    p_cal = sub.add_parser("calibrate", help="fit roofline efficiency factors and communication curves per GPU")
    p_cal.add_argument("profiles", nargs="+", help="Vidur-format profile CSVs (mlp, all_reduce, send_recv)")
    p_cal.add_argument("--gpu", default=None,
                       help="GPU all the profiles were measured on (default: from each file's prefix, a100_/h100_)")
    p_cal.add_argument("--write", help="write the fitted factors and curves to this YAML file")
    p_cal.set_defaults(func=_cmd_calibrate)

    p_tr = sub.add_parser("traces", help="inspect or download workload traces")
    tsub = p_tr.add_subparsers(dest="traces_cmd", required=True)
    p_stats = tsub.add_parser("stats", help="statistics of a trace file")
    p_stats.add_argument("path")
    p_stats.add_argument("--format", default="azure",
                         choices=["azure", "burstgpt", "mooncake", "splitwise"])
    p_dl = tsub.add_parser("download", help="download a large public trace (needs internet)")
    p_dl.add_argument("name")
    p_dl.add_argument("--dest", default="traces/downloaded")
    tsub.add_parser("list", help="list the traces download knows")
    p_tr.set_defaults(func=_cmd_traces)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ChironError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR


if __name__ == "__main__":
    sys.exit(main())
