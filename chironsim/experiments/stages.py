"""The command line of a staged experiment script (experiments/*/run.py): ``--stage`` (repeatable,
default: every stage in order) and ``--workers``, then each stage run in order with its time.

Experiment scripts run for tens of minutes; being able to redo one stage, and to see how long
each took, is what makes their REPORTs reproducible piece by piece.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any


def run_stages(stages: Mapping[str, Callable[[], Any]], description: str, default_workers: int,
               set_workers: Callable[[int], None], argv: Sequence[str] | None = None) -> None:
    """Parse ``argv``, hand the worker count to ``set_workers``, run the chosen stages in order
    and print each one's start and wall time."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--stage", choices=sorted(stages), action="append",
                        help="stage to run (repeatable); default: all")
    parser.add_argument("--workers", type=int, default=default_workers)
    args = parser.parse_args(argv)
    set_workers(args.workers)
    for name in args.stage or list(stages):
        print(f"stage {name}", flush=True)
        started = time.perf_counter()
        stages[name]()
        print(f"stage {name}: {time.perf_counter() - started:.0f} s", flush=True)
