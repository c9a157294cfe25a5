"""Where a sweep's runs execute: this process, a pool of local processes, or a Ray cluster.

Every executor calls the same worker, :func:`run_point`, which simulates one point and saves
its result folder itself (atomically) before returning a small status dict. Results therefore
never travel between processes as big objects, an interrupted sweep leaves only complete
folders behind, and the tables are identical whichever executor produced them: each run is
seeded from its own config alone.

A point that fails in any way, a user error in its trace or a MemoryError, is recorded and the
others go on. Local worker processes die with the sweep (a killed sweep must not leave workers
running queued points beside the one restarted), and a point that kills its worker (the
kernel's out-of-memory killer) is found by running the points that were in flight one by one
again, so only that point is recorded as failed.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import traceback
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chironsim.errors import ChironError
from chironsim.experiments.orphans import die_with_parent
from chironsim.metrics.atomic import write_json_atomic

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
    inputs: dict[str, str] = field(default_factory=dict)

    @property
    def args(self) -> tuple[Any, ...]:
        return (self.config, self.base_dir, self.out_dir, self.point_id, self.point, self.inputs)


class WorkerDied(Exception):
    """The process running a point ended without a result (killed by a signal)."""


def run_dir(out_dir: str | Path, point_id: str) -> Path:
    """The results folder of one point: ``OUT/runs/<point_id>``."""
    return Path(out_dir) / RUNS / point_id


def error_file(out_dir: str | Path, point_id: str) -> Path:
    """Where a failed run is recorded: ``OUT/runs/<point_id>.error.json``."""
    return Path(out_dir) / RUNS / f"{point_id}{ERROR_SUFFIX}"


def run_point(config: dict[str, Any], base_dir: str, out_dir: str, point_id: str,
              point: dict[str, Any], inputs: dict[str, str] | None = None) -> dict[str, Any]:
    """Simulate one point and save its results under ``OUT/runs/<point_id>``.

    Never raises for a failing run: the exception is written to the point's ``.error.json``
    (so the other runs go on and the next invocation retries it) and reported as
    ``{"status": "failed", ...}``. A success removes an earlier attempt's error file.
    ``inputs`` (config key → SHA-256 of each file the point reads, part of its id) goes into
    the manifest, so a result says which trace content it was computed from.
    """
    from chironsim.experiments.config import parse_config
    from chironsim.experiments.runner import run

    try:
        base = Path(base_dir)
        scenario = parse_config(config, f"grid point {point_id}", base)
        # the run writes its folder as it goes (bounded memory), atomically
        result = run(scenario, base, out=run_dir(out_dir, point_id), fmt="parquet",
                     clean_stale=False,
                     manifest_extra={"point_id": point_id, "point": dict(point),
                                     "inputs": dict(inputs or {})})
        wall = result.manifest["wall_seconds"]
    except Exception as err:  # noqa: BLE001 - any failure of one run is recorded, not fatal
        return record_failure(out_dir, point_id, point, err)
    error_file(out_dir, point_id).unlink(missing_ok=True)
    return {"point_id": point_id, "status": "ok", "wall_seconds": wall}


def record_failure(out_dir: str | Path, point_id: str, point: dict[str, Any],
                   err: BaseException) -> dict[str, Any]:
    """Write ``OUT/runs/<point_id>.error.json`` and return the failed status.

    The failed run's frames are cleared first: after a MemoryError they hold the simulation
    that filled memory, and formatting the traceback (or the next run in this process) would
    fail for lack of it. Neither formatting nor writing the record may fail the sweep.
    """
    _release_frames(err)
    message = f"{type(err).__name__}: {err}"
    try:
        text = "".join(traceback.format_exception(type(err), err, err.__traceback__))
    except MemoryError:
        text = f"{message}\n(traceback not formatted: out of memory)"
    record = {"point_id": point_id, "point": point, "error_type": type(err).__name__,
              "message": str(err), "traceback": text}
    try:
        write_json_atomic(error_file(out_dir, point_id), record)
    except OSError as write_err:
        message += f" (and its error file could not be written: {write_err.strerror or write_err})"
    return {"point_id": point_id, "status": "failed", "error": message}


def _release_frames(err: BaseException) -> None:
    """Drop the local variables of every frame in ``err``'s tracebacks (and its causes')."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [err]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        traceback.clear_frames(e.__traceback__)
        todo += [e.__cause__, e.__context__]
    gc.collect()


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


def _new_pool(workers: int) -> ProcessPoolExecutor:
    """Workers started with ``spawn`` (none inherits this process's state) that die with it."""
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=die_with_parent, initargs=(os.getpid(),))


def _process_pool(tasks: Sequence[Task], workers: int,
                  work: Callable[..., dict[str, Any]] = run_point) -> Iterator[dict[str, Any]]:
    """Local worker processes, at most ``workers`` points in flight, each running ``work``
    (:func:`run_point`; tests pass a module-level stand-in) on a task's arguments.

    When a worker dies (a point killed by the out-of-memory killer), the pool is broken and
    every point in flight fails with it; those are run again one at a time, each in a fresh
    worker, so that only the point that kills its worker is recorded as failed. The rest of
    the queue then goes on in a new pool.
    """
    queue = deque(tasks)
    while queue:
        suspects: list[Task] = []
        yield from _pool_round(queue, workers, work, suspects)
        for task in suspects:
            yield from _pool_round(deque([task]), 1, work, [], alone=True)


def _pool_round(queue: deque[Task], workers: int, work: Callable[..., dict[str, Any]],
                suspects: list[Task], alone: bool = False) -> Iterator[dict[str, Any]]:
    """Run tasks from ``queue`` until it is empty or the pool breaks (in-flight → ``suspects``)."""
    pool = _new_pool(workers)
    pending: dict[Future[dict[str, Any]], Task] = {}
    try:
        while queue or pending:
            while queue and len(pending) < workers:
                task = queue.popleft()
                pending[pool.submit(work, *task.args)] = task
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            if not alone and any(isinstance(f.exception(), BrokenProcessPool) for f in done):
                for future, task in pending.items():  # keep what finished before the break
                    if future.done() and future.exception() is None:
                        yield future.result()
                    else:
                        suspects.append(task)
                return
            for future in done:
                task = pending.pop(future)
                try:
                    yield future.result()
                except BrokenProcessPool:  # alone: this point killed its worker
                    yield record_failure(task.out_dir, task.point_id, task.point, WorkerDied(
                        "the worker process running this point died (killed by a signal, "
                        "e.g. by the kernel when the machine ran out of memory)"))
                except Exception as err:  # noqa: BLE001 - e.g. a result that cannot be unpickled
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
