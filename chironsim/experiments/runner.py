"""Run one scenario: build the workload, policy and cluster, simulate, and tabulate."""

from __future__ import annotations

import platform
import subprocess
import time
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

from chironsim.errors import ConfigError
from chironsim.experiments.config import ScenarioConfig, load_config, parse_config
from chironsim.experiments.result import Result
from chironsim.metrics.store import (
    FORMATS,
    begin_result_dir,
    discard_result_dir,
    finish_result_dir,
    write_requests_stream,
)
from chironsim.metrics.summary import summarize_batches
from chironsim.metrics.tables import events_table, instances_table, timeseries_table
from chironsim.policies.bundle import PolicyBundle
from chironsim.policies.registry import build_policy
from chironsim.sim.world import Simulation
from chironsim.workload.build import build_workload

#: The spill folder of a streamed run, inside its temporary folder (removed before the rename).
SPILL_FILE = ".requests.spill"

#: Named random streams spawned from the run's seed, in a fixed order (append only).
STREAMS = ("workload", "policy")


def _package_version() -> str:
    try:
        return version("chironsim")
    except PackageNotFoundError:
        return "unknown"


def _git_commit() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True,
                             text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def build_simulation(
    config: ScenarioConfig,
    base_dir: Path,
    progress: Callable[[float], None] | None = None,
) -> tuple[Simulation, PolicyBundle]:
    """Wire a validated scenario into a ready-to-run Simulation (its seed streams, workload,
    policy and cluster); ``run`` uses it, and tests use it to inspect the live simulation."""
    seeds = dict(zip(STREAMS, np.random.SeedSequence(config.seed).spawn(len(STREAMS))))
    workload = build_workload(config.workload, seeds["workload"], base_dir, config.duration_s)
    bundle = build_policy(config.policy, np.random.default_rng(seeds["policy"]))
    sim = Simulation(
        cluster_config=config.cluster,
        classes=config.classes,
        workload=workload,
        router=bundle.router,
        autoscalers=list(bundle.autoscalers),
        duration_s=config.duration_s,
        drain_s=config.drain_s,
        sample_interval_s=config.sample_interval_s,
        progress=progress,
        queued_classes=bundle.queued_classes,
        evicting_pools=bundle.evicting_pools,
        engine_settings=bundle.engine_settings,
    )
    return sim, bundle


def run(
    config: ScenarioConfig | dict[str, Any] | str | Path,
    base_dir: str | Path | None = None,
    progress: Callable[[float, float], None] | None = None,
    *,
    out: str | Path | None = None,
    fmt: str = "parquet",
    plots: bool = False,
    clean_stale: bool = True,
    manifest_extra: dict[str, Any] | None = None,
    spill_rows: int | None = None,
) -> Result:
    """Simulate one scenario and return its tables.

    ``config`` may be a validated :class:`ScenarioConfig`, a plain mapping (validated here) or a
    path to a YAML file. Relative trace paths resolve against ``base_dir`` (default: the YAML
    file's folder, or the current directory). ``progress(now, end_estimate)`` is called as
    simulated time advances.

    With ``out``, the results folder is written as the run goes, in bounded memory: finished
    requests are flushed to a spill folder in the folder's hidden temporary every
    ``spill_rows`` (default :data:`~chironsim.metrics.spill.RUN_ROWS`), the requests table is
    written from them in id order and the summary computed from them exactly; the folder is
    renamed into place complete (as :meth:`Result.save`, ``fmt``, ``plots`` and
    ``clean_stale`` as there), or not at all if the run fails or is killed. The returned
    result reads its ``requests`` table from the folder when first asked for it; every table
    equals the one a run without ``out`` returns. ``manifest_extra`` is added to the manifest.
    """
    if isinstance(config, (str, Path)):
        config, folder = load_config(config)
        base_dir = base_dir or folder
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    if isinstance(config, dict):
        config = parse_config(config, "<config>", base)
    if not isinstance(config, ScenarioConfig):
        raise ConfigError(f"expected a ScenarioConfig, a mapping or a path, got {type(config).__name__}")

    estimate = config.duration_s
    sim, bundle = build_simulation(
        config, base,
        progress=(lambda now: progress(now, estimate or now)) if progress else None,
    )
    if out is not None:
        if fmt not in FORMATS:
            raise ConfigError(f"result format {fmt!r} is not one of {', '.join(FORMATS)}")
        tmp = begin_result_dir(out, clean_stale)
        try:
            return _run_streamed(config, sim, bundle, Path(out), tmp, fmt, plots,
                                 manifest_extra, spill_rows)
        except BaseException:
            discard_result_dir(tmp)
            raise
    started = time.perf_counter()
    end = sim.run()
    wall = time.perf_counter() - started
    prices = _prices(sim)
    manifest = _manifest(config, sim, bundle, end, wall)
    if manifest_extra:
        manifest.update(manifest_extra)
    # the records are released as their table is built: a long run's end then holds one of
    # them at a time, not both (docs/performance.md, "Memory per request")
    return Result.from_records(
        sim.request_records.table(release=True), sim.cluster.instance_records, sim.timeseries,
        sim.events,
        classes=config.classes, duration_s=max(end, 1e-9), price_per_gpu_hour=prices,
        manifest=manifest, itl=sim.itl_recorder.by_class,
    )


def _prices(sim: Simulation) -> dict[str, float]:
    return {spec.gpu.name: spec.gpu.price_per_gpu_hour for spec in sim.cluster.pools.values()}


def _manifest(config: ScenarioConfig, sim: Simulation, bundle: PolicyBundle, end: float,
              wall: float) -> dict[str, Any]:
    return {
        "name": config.name,
        "seed": config.seed,
        "config": config.model_dump(mode="json"),
        "chironsim_version": _package_version(),
        "git_commit": _git_commit(),
        "python": platform.python_version(),
        "sim_end_s": end,
        "wall_seconds": wall,
        "requests": sim.arrived,
        "policy": bundle.name,
        # each pool's resolved weight and KV-cache dtypes (a pool inherits the cluster's)
        "precision": {name: {"dtype": spec.precision.weights, "kv_cache_dtype": spec.precision.kv_cache}
                      for name, spec in sim.cluster.pools.items()},
    }


def _run_streamed(config: ScenarioConfig, sim: Simulation, bundle: PolicyBundle, out: Path,
                  tmp: Path, fmt: str, plots: bool, manifest_extra: dict[str, Any] | None,
                  spill_rows: int | None) -> Result:
    """``run`` with an output folder (see there): ``tmp`` is its hidden temporary."""
    records = sim.request_records
    records.spill_to(tmp / SPILL_FILE, **({"run_rows": spill_rows} if spill_rows else {}))
    started = time.perf_counter()
    end = sim.run()
    wall = time.perf_counter() - started
    path = tmp / f"requests.{fmt}"
    write_requests_stream(records.sorted_batches(), records.classes(), path, fmt)
    itl = sim.itl_recorder.by_class
    instances = instances_table(sim.cluster.instance_records)
    summary = summarize_batches(records.sorted_batches, instances, config.classes,
                                max(end, 1e-9), _prices(sim), itl)
    records.spill.remove()
    manifest = _manifest(config, sim, bundle, end, wall)
    if itl is not None:
        manifest["itl_histograms"] = {name: h.to_dict() for name, h in sorted(itl.items())}
    if manifest_extra:
        manifest.update(manifest_extra)
    result = Result.stored(tmp, instances=instances, timeseries=timeseries_table(sim.timeseries),
                           events=events_table(sim.events), summary=summary, manifest=manifest)

    def draw(folder: Path) -> None:
        from chironsim.plots import write_standard_plots

        write_standard_plots(result, folder / "plots")

    finish_result_dir(tmp, out, {name: getattr(result, name) for name in
                                 ("instances", "timeseries", "events", "summary")},
                      manifest, fmt, before_commit=draw if plots else None)
    result.stored_at(out)
    return result
