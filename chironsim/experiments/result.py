"""What one run returns in memory and writes to its results folder (DESIGN.md §6)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from chironsim.metrics.histogram import LogHistogram
from chironsim.metrics.records import InstanceRecord, RequestRecord
from chironsim.metrics.slo import RequestClassSpec
from chironsim.metrics.store import load_tables, read_table, save_result
from chironsim.metrics.summary import summarize
from chironsim.metrics.tables import (
    events_table,
    instances_table,
    requests_table,
    timeseries_table,
)


@dataclass(eq=False)
class Result:
    """The tables of one run plus its manifest (resolved config, seed, version, commit, wall time).

    ``eq=False`` because DataFrames have no single truth value; compare tables with
    ``pandas.testing.assert_frame_equal``.
    """

    requests: pd.DataFrame
    instances: pd.DataFrame
    timeseries: pd.DataFrame
    events: pd.DataFrame
    summary: pd.DataFrame
    manifest: dict = field(default_factory=dict)

    @classmethod
    def from_records(
        cls,
        requests: Iterable[RequestRecord] | pd.DataFrame,
        instances: Iterable[InstanceRecord],
        timeseries: Iterable[Mapping[str, object]],
        events: Iterable[Mapping[str, object]],
        *,
        classes: Mapping[str, RequestClassSpec],
        duration_s: float,
        price_per_gpu_hour: Mapping[str, float],
        manifest: dict | None = None,
        itl: Mapping[str, LogHistogram] | None = None,
    ) -> Result:
        """Build every table, the summary included, from what the simulator collected.

        ``itl`` are the run's inter-token-gap histograms per class: the summary's ``itl_*``
        columns come from them, and the manifest keeps them (``itl_histograms``, see
        :meth:`LogHistogram.to_dict`) so that runs can be merged later. ``requests`` may be
        the requests table already built (the runner builds it while releasing the records)."""
        req = requests if isinstance(requests, pd.DataFrame) else requests_table(requests)
        inst = instances_table(instances)
        manifest = dict(manifest or {})
        if itl is not None:
            manifest["itl_histograms"] = {name: h.to_dict() for name, h in sorted(itl.items())}
        return cls(
            requests=req,
            instances=inst,
            timeseries=timeseries_table(timeseries),
            events=events_table(events),
            summary=summarize(req, inst, classes, duration_s, price_per_gpu_hour, itl),
            manifest=manifest,
        )

    @classmethod
    def stored(cls, folder: str | os.PathLike[str], **tables: object) -> Result:
        """A result whose requests table is in ``folder`` (a streamed run's) and is read from
        there when first asked for; the other tables and the manifest are given."""
        result = cls.__new__(cls)
        for name, value in tables.items():
            setattr(result, name, value)
        result.stored_at(folder)
        return result

    def stored_at(self, folder: str | os.PathLike[str]) -> None:
        """Where a stored result's requests table is now (the folder was moved into place)."""
        if "requests" not in self.__dict__:
            self.__dict__["_requests_folder"] = Path(folder)

    def __getattr__(self, name: str) -> object:
        folder = self.__dict__.get("_requests_folder")
        if name == "requests" and folder is not None:
            table = read_table(folder, "requests")
            self.__dict__["requests"] = table
            return table
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def save(self, out_dir: str | os.PathLike[str], fmt: str = "parquet", plots: bool = False,
             clean_stale: bool = True) -> Path:
        """Write the results folder atomically (see :mod:`chironsim.metrics.store`).

        ``plots`` draws the standard figures into the folder's ``plots/`` before it is renamed
        into place, so a folder that exists has all of them. ``clean_stale`` is passed on to
        :func:`~chironsim.metrics.store.save_result`.
        """
        def draw(tmp: Path) -> None:
            from chironsim.plots import write_standard_plots

            write_standard_plots(self, tmp / "plots")

        return save_result(self, out_dir, fmt, before_commit=draw if plots else None,
                           clean_stale=clean_stale)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Result:
        """Read a results folder written by :meth:`save` (Parquet or CSV)."""
        tables, manifest = load_tables(path)
        return cls(**tables, manifest=manifest)


def load_result(path: str | os.PathLike[str]) -> Result:
    """Same as :meth:`Result.load`."""
    return Result.load(path)
