"""The fixed set of PNGs a run writes next to its tables (``chironsim run`` / ``plot``)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from chironsim.metrics.atomic import remove_stale_temporaries, replace_from_temp
from chironsim.plots.figures import (
    instances_over_time,
    kv_utilization_over_time,
    latency_cdf,
    queue_over_time,
)

if TYPE_CHECKING:
    from chironsim.metrics.store import ResultLike

FIGSIZE = (7.0, 4.5)
DPI = 110


def write_standard_plots(result: ResultLike, out_dir: str | os.PathLike[str]) -> list[Path]:
    """Write latency CDFs (TTFT, TPOT, E2E), instances, queue and KV utilisation over time.

    Returns the paths written, in that order.
    """
    drawings: list[tuple[str, Callable[[Axes], Axes]]] = [
        *(
            (f"latency_cdf_{m}.png", lambda ax, m=m: latency_cdf(result.requests, ax, m))
            for m in ("ttft", "tpot", "e2e")
        ),
        ("instances.png", lambda ax: instances_over_time(result.timeseries, ax)),
        ("queue.png", lambda ax: queue_over_time(result.timeseries, ax)),
        ("kv_utilization.png", lambda ax: kv_utilization_over_time(result.timeseries, ax)),
    ]
    return save_figures(drawings, out_dir)


def save_figures(drawings: Sequence[tuple[str, Callable[[Axes], Axes]]],
                 out_dir: str | os.PathLike[str]) -> list[Path]:
    """Draw each ``(file name, draw(ax))`` on its own figure and save it as a PNG in ``out_dir``.

    Uses the Agg canvas directly: no window, no pyplot state, nothing left open. Each PNG is
    written to a hidden temporary and renamed, so a killed ``chironsim plot`` leaves no
    half-drawn figure under a real name in a results folder.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out)
    written = []
    for name, draw in drawings:
        fig = Figure(figsize=FIGSIZE, dpi=DPI)
        FigureCanvasAgg(fig)
        draw(fig.add_subplot())
        fig.tight_layout()
        path = out / name
        replace_from_temp(path, lambda tmp: fig.savefig(tmp, format="png"))
        written.append(path)
    return written
