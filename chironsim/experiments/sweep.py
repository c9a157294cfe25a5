"""Run a sweep: every grid point once, resumable, then one tidy table and its aggregate.

A sweep folder ``OUT/`` holds::

    spec.yaml                  the spec as given
    runs/<point_id>/           one complete result folder per point (atomic: see metrics.store)
    runs/<point_id>.error.json a run that raised: its point, exception and traceback
    runs.parquet               one row per point × request class (status, axes, summary columns)
    summary.parquet            per group of axes other than seed × class: mean, 95 % CI, n

Running the same sweep again skips every point whose folder is complete and retries the
failed ones, so an interrupted sweep (Ctrl-C, a killed job, a lost node) resumes where it
stopped. The point id is a hash of the resolved config and of the files it reads, so editing
the spec or a trace only runs the points that are new. Before a folder is reused it is checked
(manifest, table sizes, Parquet footers, its summary read): a damaged one is reported, removed
and run again rather than crashing the sweep or being reused forever.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from chironsim.errors import ChironError
from chironsim.experiments.aggregate import OK, summarize_sweep
from chironsim.experiments.executors import RUNS, Task, check_executor, execute, run_dir
from chironsim.experiments.spec import (
    SEED_AXIS,
    SpecSource,
    SweepPlan,
    SweepSpec,
    expand,
    load_spec,
    parse_spec,
)
from chironsim.metrics.atomic import (
    remove_stale_temporaries,
    write_parquet_atomic,
    write_text_atomic,
)
from chironsim.metrics.store import read_manifest, read_table, result_dir_problem
from chironsim.metrics.summary import SUMMARY_SCHEMA
from chironsim.metrics.tables import INT

SPEC_FILE = "spec.yaml"
RUNS_TABLE = "runs.parquet"
SUMMARY_TABLE = "summary.parquet"
FAILED, SKIPPED = "failed", "skipped"


@dataclass(eq=False)
class SweepResult:
    """A sweep's two tables (see the module docstring) and its folder; ``damaged`` maps each
    point whose earlier result folder was found damaged (and was run again) to the reason."""

    runs: pd.DataFrame
    summary: pd.DataFrame
    out_dir: Path
    damaged: dict[str, str] = field(default_factory=dict)

    @property
    def failed(self) -> pd.DataFrame:
        """One row per failed point: its id, axes and error."""
        rows = self.runs[self.runs["status"] == FAILED]
        return rows.drop_duplicates("point_id").drop(columns=["request_class"])

    def point_counts(self) -> dict[str, int]:
        """Points by status (``ok``, ``failed``, ``skipped``) and how many were ``resumed``."""
        points = self.runs.drop_duplicates("point_id")
        counts = {s: int((points["status"] == s).sum()) for s in (OK, FAILED, SKIPPED)}
        counts["resumed"] = int(points["resumed"].sum())
        return counts


def plan_sweep(spec: str | os.PathLike[str] | SweepSpec | Mapping[str, Any]) -> SweepPlan:
    """Load (if a path), validate and expand a spec; relative paths of an object resolve in cwd."""
    if isinstance(spec, SweepSpec):
        return expand(spec, SpecSource())
    if isinstance(spec, Mapping):
        source = SpecSource()
        return expand(parse_spec(dict(spec), source), source)
    loaded, source = load_spec(spec)
    return expand(loaded, source)


def run_sweep(
    spec: str | os.PathLike[str] | SweepSpec | Mapping[str, Any] | SweepPlan,
    out_dir: str | os.PathLike[str],
    executor: str = "local",
    workers: int | None = None,
    address: str | None = None,
    progress: bool = True,
) -> SweepResult:
    """Run every point not already complete in ``out_dir``, then write and return the tables.

    Every point is validated before any runs. ``executor`` is ``"local"`` (processes on this
    machine; ``workers`` defaults to the CPU count, and ``workers=1`` runs in this process) or
    ``"ray"`` (``address`` of a cluster, or a local Ray started for the sweep). A failing run
    does not stop the others: it is recorded and retried by the next call. On Ctrl-C the tables
    are still written, with the points not run marked ``skipped``.
    """
    plan = spec if isinstance(spec, SweepPlan) else plan_sweep(spec)
    check_executor(executor, workers, address)
    out = Path(out_dir)
    _check_sweep_dir(out)
    runs = out / RUNS
    runs.mkdir(parents=True, exist_ok=True)
    # This sweep is the folder's only writer: every temporary whose process is gone is litter.
    remove_stale_temporaries(out, untagged=True)
    remove_stale_temporaries(runs, untagged=True)
    write_text_atomic(out / SPEC_FILE, _spec_text(plan))

    tasks = {point.point_id: Task(point.config.model_dump(mode="json"),
                                  str(plan.base_dir.resolve()), str(out.resolve()),
                                  point.point_id, _jsonable(point.coords), dict(point.inputs))
             for point in plan.points}
    finished, damaged = _reusable_runs(out, tasks)
    resumed = set(finished)
    todo = [t for pid, t in tasks.items() if pid not in resumed]
    outcomes: dict[str, dict[str, Any]] = {}
    bar = _progress_bar(plan.spec.name, len(tasks), len(resumed), progress)
    try:
        for status in execute(todo, executor, workers, address):
            outcomes[status["point_id"]] = status
            if bar is not None:
                bar.update(1)
    except KeyboardInterrupt:
        _write_tables(plan, out, resumed, outcomes, finished)
        raise
    finally:
        if bar is not None:
            bar.close()
    result = _write_tables(plan, out, resumed, outcomes, finished)
    result.damaged.update(damaged)
    return result


def _reusable_runs(out: Path, tasks: Mapping[str, Task]) -> tuple[dict[str, _Run], dict[str, str]]:
    """The intact finished runs (point id → summary and wall time), and the damaged ones.

    A damaged folder (truncated table, unreadable manifest, another point's results) is
    reported on stderr and removed, so that its point runs again like one never run.
    """
    finished: dict[str, _Run] = {}
    damaged: dict[str, str] = {}
    for pid in tasks:
        folder = run_dir(out, pid)
        if not folder.exists():
            continue
        try:
            finished[pid] = _read_run(folder, pid)
        except _Damaged as err:
            damaged[pid] = str(err)
            print(f"warning: {folder}: {err}; running this point again", file=sys.stderr)
            if folder.is_dir() and not folder.is_symlink():
                shutil.rmtree(folder)
            else:
                folder.unlink()
    return finished, damaged


def load_sweep(out_dir: str | os.PathLike[str]) -> SweepResult:
    """Read the tables of a finished sweep folder."""
    out = Path(out_dir)
    missing = [name for name in (RUNS_TABLE, SUMMARY_TABLE) if not (out / name).is_file()]
    if missing:
        raise ChironError(f"{out}: not a finished sweep folder (no {' or '.join(missing)})")
    return SweepResult(pd.read_parquet(out / RUNS_TABLE), pd.read_parquet(out / SUMMARY_TABLE), out)


# ----------------------------------------------------------------------------- tables


def runs_table(plan: SweepPlan, out: Path, resumed: set[str],
               outcomes: Mapping[str, Mapping[str, Any]],
               finished: Mapping[str, _Run] | None = None) -> pd.DataFrame:
    """One row per point × request class of its summary; one row with no class if not ok.

    ``status`` is ``ok`` (a complete result folder: run now or ``resumed``), ``failed`` (raised
    in this invocation; ``error`` says why) or ``skipped`` (not run: the sweep was interrupted).
    ``finished`` holds the runs already read (the checked resumed ones); the others are read
    from their folders, and one that cannot be read counts as failed (it is rerun next time).
    """
    axes = list(plan.axes)
    extra = [] if SEED_AXIS in axes else [SEED_AXIS]
    summary_cols = [name for name, _ in SUMMARY_SCHEMA if name != "request_class"]
    rows: list[dict[str, Any]] = []
    cache: dict[str, _Run] = dict(finished or {})
    for point in plan.points:
        pid = point.point_id
        head = {"point_id": pid, "status": SKIPPED, "resumed": pid in resumed, "error": None,
                **point.coords, **({SEED_AXIS: point.config.seed} if extra else {})}
        folder = run_dir(out, pid)
        outcome = outcomes.get(pid, {})
        if outcome.get("status") == FAILED:
            rows.append({**head, "status": FAILED, "error": outcome.get("error")})
            continue
        if pid not in cache:
            if not folder.exists():
                rows.append(head)
                continue
            try:
                cache[pid] = _read_run(folder, pid)
            except _Damaged as err:
                rows.append({**head, "status": FAILED, "error": f"damaged result folder: {err}"})
                continue
        summary, wall = cache[pid]
        for _, srow in summary.iterrows():
            rows.append({**head, "status": OK, "wall_seconds": wall,
                         "request_class": srow["request_class"],
                         **{c: srow[c] for c in summary_cols}})
    columns = ["point_id", "status", "resumed", "error", *axes, *extra, "wall_seconds",
               "request_class", *summary_cols]
    table = pd.DataFrame.from_records(rows, columns=columns)
    for axis in [*axes, *extra]:
        table[axis] = _axis_column([p.coords.get(axis, p.config.seed) for p in plan.points],
                                   table[axis])
    table["resumed"] = table["resumed"].astype(bool)
    table["wall_seconds"] = table["wall_seconds"].astype(float)
    for name, kind in SUMMARY_SCHEMA:
        if name != "request_class":
            table[name] = table[name].astype("Int64" if kind == INT else float)
    for name in ("point_id", "status", "error", "request_class"):
        table[name] = table[name].astype(object).where(table[name].notna(), None)
    return table


#: What a finished run contributes to the tables: its summary and wall time.
_Run = tuple[pd.DataFrame, float]


class _Damaged(Exception):
    """A point's result folder exists but cannot be used; the message says why."""


def _read_run(folder: Path, pid: str) -> _Run:
    """The summary and wall time of an intact result folder of point ``pid``, or _Damaged."""
    problem = result_dir_problem(folder)
    if problem is not None:
        raise _Damaged(problem)
    try:
        manifest = read_manifest(folder)
        summary = read_table(folder, "summary", manifest.get("files"))
    except ChironError as err:
        raise _Damaged(str(err).removeprefix(f"{folder}").lstrip("/: ")) from None
    if manifest.get("point_id", pid) != pid:
        raise _Damaged(f"it holds the results of point {manifest.get('point_id')!r}")
    try:
        wall = float(manifest.get("wall_seconds", "nan"))
    except (TypeError, ValueError):
        raise _Damaged("its manifest has no valid wall_seconds") from None
    return summary, wall


def _axis_column(values: list[Any], column: pd.Series) -> pd.Series:
    """Numbers stay numbers and booleans booleans; a mixed axis becomes strings throughout."""
    if all(isinstance(v, bool) for v in values):
        return column.astype(bool)
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return column.astype("int64")
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return column.astype(float)
    return column.map(lambda v: v if isinstance(v, str) else json.dumps(v)).astype(object)


def _write_tables(plan: SweepPlan, out: Path, resumed: set[str],
                  outcomes: Mapping[str, Mapping[str, Any]],
                  finished: Mapping[str, _Run]) -> SweepResult:
    runs = runs_table(plan, out, resumed, outcomes, finished)
    summary = summarize_sweep(runs, plan.axes, plan.metrics)
    write_parquet_atomic(runs, out / RUNS_TABLE)
    write_parquet_atomic(summary, out / SUMMARY_TABLE)
    return load_sweep(out)  # what is on disk, with its dtypes, so both ways give equal frames


# ----------------------------------------------------------------------------- the folder


def _check_sweep_dir(out: Path) -> None:
    """Refuse to write into a file or a folder of something else (a mistyped ``--out``)."""
    if not out.exists():
        existing = next((p for p in out.absolute().parents if p.exists()), None)
        if existing is not None and not existing.is_dir():
            raise ChironError(f"{out}: cannot create the sweep folder, {existing} is a file")
        return
    if not out.is_dir():
        raise ChironError(f"{out}: exists and is not a folder; refusing to write a sweep there")
    if any(out.iterdir()) and not ((out / SPEC_FILE).is_file() or (out / RUNS).is_dir()):
        raise ChironError(f"{out}: folder exists and is not a chironsim sweep folder; "
                          "refusing to write into it")


def _spec_text(plan: SweepPlan) -> str:
    if plan.source.text is not None:
        return plan.source.text
    return yaml.safe_dump(plan.spec.model_dump(mode="json"), sort_keys=False)


def _jsonable(coords: Mapping[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(dict(coords), default=str))


def _progress_bar(name: str, total: int, done: int, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=done, unit="run", desc=name, file=sys.stderr)


__all__ = ["SweepResult", "load_sweep", "plan_sweep", "run_sweep", "runs_table"]
