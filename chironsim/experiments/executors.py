"""Where a sweep's runs execute: this process, a pool of local processes, or a Ray cluster.

Every executor calls the same worker, :func:`run_point`, which simulates one point and saves
its result folder itself (atomically) before returning a small status dict. Results therefore
never travel between processes as big objects, an interrupted sweep leaves only complete
folders behind, and the tables are identical whichever executor produced them: each run is
seeded from its own config alone.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import tempfile
import traceback
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chironsim.errors import ChironError

EXECUTORS = ("local", "ray")
RUNS = "runs"
ERROR_SUFFIX = ".error.json"


@dataclass(frozen=True)
class Task:
    """One run to do: the arguments of :func:`run_point`, all plain JSON-able values."""

    config: dict[str, Any]
    base_dir: str
    out_dir: str
    point_id: str
    point: dict[str, Any]

    @property
    def args(self) -> tuple[Any, ...]:
        return (self.config, self.base_dir, self.out_dir, self.point_id, self.point)


def run_dir(out_dir: str | Path, point_id: str) -> Path:
    """The results folder of one point: ``OUT/runs/<point_id>``."""
    return Path(out_dir) / RUNS / point_id


def error_file(out_dir: str | Path, point_id: str) -> Path:
    """Where a failed run is recorded: ``OUT/runs/<point_id>.error.json``."""
    return Path(out_dir) / RUNS / f"{point_id}{ERROR_SUFFIX}"


def run_point(config: dict[str, Any], base_dir: str, out_dir: str, point_id: str,
              point: dict[str, Any]) -> dict[str, Any]:
    """Simulate one point and save its results under ``OUT/runs/<point_id>``.

    Never raises for a failing run: the exception is written to the point's ``.error.json``
    (so the other runs go on and the next invocation retries it) and reported as
    ``{"status": "failed", ...}``. A success removes an earlier attempt's error file.
    """
    from chironsim.experiments.config import parse_config
    from chironsim.experiments.runner import run

    try:
        base = Path(base_dir)
        scenario = parse_config(config, f"grid point {point_id}", base)
        result = run(scenario, base)
        result.manifest["point_id"] = point_id
        result.manifest["point"] = dict(point)
        result.save(run_dir(out_dir, point_id), fmt="parquet")
    except Exception as err:  # noqa: BLE001 - any failure of one run is recorded, not fatal
        return record_failure(out_dir, point_id, point, err)
    error_file(out_dir, point_id).unlink(missing_ok=True)
    return {"point_id": point_id, "status": "ok", "wall_seconds": result.manifest["wall_seconds"]}


def record_failure(out_dir: str | Path, point_id: str, point: dict[str, Any],
                   err: BaseException) -> dict[str, Any]:
    """Write ``OUT/runs/<point_id>.error.json`` and return the failed status."""
    text = "".join(traceback.format_exception(type(err), err, err.__traceback__))
    record = {"point_id": point_id, "point": point, "error_type": type(err).__name__,
              "message": str(err), "traceback": text}
    write_json_atomic(error_file(out_dir, point_id), record)
    return {"point_id": point_id, "status": "failed",
            "error": f"{type(err).__name__}: {err}"}


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to a hidden temporary sibling, then rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, default=str)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def execute(tasks: Sequence[Task], executor: str = "local", workers: int | None = None,
            address: str | None = None) -> Iterator[dict[str, Any]]:
    """Run the tasks and yield each one's status dict as it finishes (in completion order)."""
    check_executor(executor, workers, address)
    if not tasks:
        return iter(())
    if executor == "ray":
        return _ray(tasks, workers, address)
    workers = min(workers or os.cpu_count() or 1, len(tasks))
    return _in_process(tasks) if workers == 1 else _process_pool(tasks, workers)


def check_executor(executor: str, workers: int | None = None, address: str | None = None) -> None:
    """Refuse an unusable executor choice before anything is written or run."""
    if executor not in EXECUTORS:
        raise ChironError(f"unknown executor {executor!r} (expected one of: {', '.join(EXECUTORS)})")
    if workers is not None and workers < 1:
        raise ChironError(f"workers must be 1 or more, got {workers}")
    if address is not None and executor != "ray":
        raise ChironError("an address is for the ray executor; add --executor ray")
    if executor == "ray":
        _import_ray()


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ChironError("the ray executor needs Ray, which is not installed: "
                          "pip install 'chironsim[ray]'") from None
    return ray


def _in_process(tasks: Sequence[Task]) -> Iterator[dict[str, Any]]:
    """One run after another in this process: tracebacks and debuggers work as usual."""
    for task in tasks:
        yield run_point(*task.args)


def _process_pool(tasks: Sequence[Task], workers: int) -> Iterator[dict[str, Any]]:
    """Local worker processes, started with ``spawn`` so that none inherits this one's state."""
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))
    try:
        pending: dict[Future[dict[str, Any]], Task] = {
            pool.submit(run_point, *task.args): task for task in tasks}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                task = pending.pop(future)
                try:
                    yield future.result()
                except Exception as err:  # noqa: BLE001 - e.g. a worker killed by the OS
                    yield record_failure(task.out_dir, task.point_id, task.point, err)
    finally:
        # Leaving early (Ctrl-C, an error) must not wait for the runs not yet started.
        pool.shutdown(wait=True, cancel_futures=True)


def _ray(tasks: Sequence[Task], workers: int | None, address: str | None) -> Iterator[dict[str, Any]]:
    """Ray tasks, one CPU each; at most ``workers`` in flight when given.

    With ``address`` it connects to that cluster (whose workers need chironsim installed and
    ``OUT`` on storage they share with this machine); otherwise it starts a local Ray for the
    sweep and shuts it down afterwards. A Ray already initialised by the caller is used as is.
    """
    ray = _import_ray()
    started = False
    if not ray.is_initialized():
        options: dict[str, Any] = {"include_dashboard": False, "logging_level": "WARNING"}
        if address:
            options["address"] = address
        elif workers:
            options["num_cpus"] = workers
        try:
            ray.init(**options)
        except ConnectionError as err:
            raise ChironError(f"--address {address}: cannot connect to the Ray cluster ({err})") from None
        started = True
    remote = ray.remote(num_cpus=1, max_retries=0)(run_point)
    queue = list(tasks)
    limit = workers or len(queue)
    pending: dict[Any, Task] = {}
    try:
        while queue or pending:
            while queue and len(pending) < limit:
                task = queue.pop(0)
                pending[remote.remote(*task.args)] = task
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                task = pending.pop(ref)
                try:
                    yield ray.get(ref)
                except Exception as err:  # noqa: BLE001 - e.g. a worker node lost
                    yield record_failure(task.out_dir, task.point_id, task.point, err)
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)
        if started:
            ray.shutdown()
