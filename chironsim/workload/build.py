"""Turn a :class:`WorkloadConfig` into one lazy, arrival-ordered stream of request specs.

Randomness: stream ``i`` draws from ``SeedSequence(seed.entropy, spawn_key=seed.spawn_key +
(i,))`` — the i-th child ``seed.spawn`` would give on a fresh sequence — split again into
three generators: arrivals (0), prompt lengths (1), output lengths (2). ``seed`` itself is not
mutated, so the same SeedSequence always gives the same workload. What follows:
- appending a stream never changes the requests of the streams before it;
- changing a stream's length distributions never changes its arrival times, and the i-th
  request's lengths do not depend on the arrival process (see ``lengths.py``);
- inserting, removing or reordering streams renumbers those after it, which changes their
  draws (trace streams take an index too, though they draw nothing).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from operator import attrgetter
from pathlib import Path

import numpy as np

from chironsim.errors import ConfigError
from chironsim.workload.config import (
    BatchStream,
    EmpiricalLength,
    SyntheticStream,
    TraceColumns,
    TraceFormat,
    TraceStream,
    WorkloadConfig,
)
from chironsim.workload.lengths import EmpiricalTable
from chironsim.workload.readers import check_trace_header
from chironsim.workload.spec import RequestSpec
from chironsim.workload.streams import (
    StreamStats,
    batch_stream,
    synthetic_stream,
    trace_stream,
)


def resolve_path(path: Path, base_dir: Path) -> Path:
    """``~`` expanded; a relative path is taken relative to ``base_dir`` (the config's folder)."""
    path = path.expanduser()
    return path if path.is_absolute() else Path(base_dir) / path


def stream_generators(seed: np.random.SeedSequence, index: int) -> list[np.random.Generator]:
    """The (arrivals, prompt, output) generators of stream ``index``; ``seed`` is not touched."""
    child = np.random.SeedSequence(
        seed.entropy, spawn_key=(*seed.spawn_key, index), pool_size=seed.pool_size
    )
    return [np.random.Generator(np.random.PCG64(s)) for s in child.spawn(3)]


class Workload(Iterator[RequestSpec]):
    """The merged request stream; iterate it once. ``stats`` has one entry per stream.

    Streams are merged with ``heapq.merge`` on arrival time, which is stable: equal arrivals
    come out in stream order (then in each stream's own order). Requests arriving at or after
    ``horizon`` end the workload.
    """

    def __init__(
        self,
        config: WorkloadConfig,
        seed: np.random.SeedSequence,
        base_dir: Path,
        horizon: float | None = None,
    ) -> None:
        self.horizon = horizon
        self.stats: tuple[StreamStats, ...] = tuple(
            StreamStats(kind=s.kind, request_class=s.request_class) for s in config.streams
        )
        tables: dict[tuple[Path, str, object], EmpiricalTable] = {}

        def table(spec: EmpiricalLength) -> EmpiricalTable:
            path = resolve_path(spec.path, base_dir)
            key = (path, spec.format, spec.columns)
            if key not in tables:
                tables[key] = EmpiricalTable.load(spec, path)
            return tables[key]

        generators: list[Iterator[RequestSpec]] = []
        for index, (stream, stats) in enumerate(zip(config.streams, self.stats)):
            if isinstance(stream, TraceStream):
                path = resolve_path(stream.path, base_dir)
                generators.append(trace_stream(stream, path, stats))
            elif isinstance(stream, SyntheticStream):
                rngs = stream_generators(seed, index)
                generators.append(synthetic_stream(stream, rngs, table, stats))
            else:
                rngs = stream_generators(seed, index)
                generators.append(batch_stream(stream, rngs, table, stats))
        self._generators = generators
        self._merged = heapq.merge(*generators, key=attrgetter("arrival"))
        self._done = False

    def __iter__(self) -> Workload:
        return self

    def __next__(self) -> RequestSpec:
        if self._done:
            raise StopIteration
        spec = next(self._merged, None)
        if spec is None or (self.horizon is not None and spec.arrival >= self.horizon):
            self.close()
            raise StopIteration
        return spec

    def close(self) -> None:
        """Stop early and release the open trace files."""
        self._done = True
        self._merged.close()
        for generator in self._generators:
            generator.close()  # type: ignore[attr-defined]


def build_workload(
    config: WorkloadConfig,
    seed: np.random.SeedSequence,
    base_dir: Path,
    horizon: float | None = None,
) -> Workload:
    """A lazy iterator of every stream's requests, merged by arrival.

    Requests arriving at or after ``horizon`` (simulated s) are not produced, and an endless
    stream ends there. Relative paths in the config are resolved against ``base_dir``.

    Nothing is read or drawn until the first request is asked for. Call
    :func:`check_workload_files` first to fail before a simulation starts.
    """
    return Workload(config, seed, Path(base_dir), horizon)


def _check_file(path: Path, key: str) -> None:
    if not path.is_file():
        what = "is not a file" if path.exists() else "does not exist"
        raise ConfigError(f"{key}: trace file {path} {what}")


def workload_files(
    config: WorkloadConfig, base_dir: Path, key_prefix: str = "workload"
) -> list[tuple[str, Path, TraceFormat, TraceColumns | None, bool]]:
    """Every file the workload reads: (config key, resolved path, format, columns, needs arrival).

    One list for the early checks here and for fingerprinting a scenario's inputs
    (:mod:`chironsim.experiments.fingerprint`), so a new kind of input file cannot be checked
    but left out of a sweep point's identity, or the other way round.
    """
    files: list[tuple[str, Path, TraceFormat, TraceColumns | None, bool]] = []
    for index, stream in enumerate(config.streams):
        key = f"{key_prefix}.streams[{index}]"
        if isinstance(stream, TraceStream):
            files.append((f"{key}.path", resolve_path(stream.path, base_dir), stream.format,
                          stream.columns, True))
            continue
        assert isinstance(stream, (SyntheticStream, BatchStream))
        for field in ("prompt_tokens", "output_tokens"):
            dist = getattr(stream, field)
            if isinstance(dist, EmpiricalLength):
                files.append((f"{key}.{field}.path", resolve_path(dist.path, base_dir),
                              dist.format, dist.columns, False))
    return files


def check_workload_files(
    config: WorkloadConfig, base_dir: Path, key_prefix: str = "workload"
) -> None:
    """Fail early: every file the workload names exists and has the columns its format needs.

    Raises ConfigError naming the config key (``workload.streams[0].path``) and the file, or
    TraceFormatError naming the file and line of a bad header.
    """
    for key, path, fmt, columns, need_arrival in workload_files(config, base_dir, key_prefix):
        _check_file(path, key)
        check_trace_header(path, fmt, columns, need_arrival=need_arrival)
