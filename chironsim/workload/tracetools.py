"""Trace inspection and download: what ``chironsim traces`` stands on.

``trace_stats`` streams a file once (memory: two small integers a row for the length
percentiles). ``download_trace`` fetches one of the large public traces named in
``trace_registry.yaml`` for users with internet access; nothing in chironsim needs it.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from array import array
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np
import yaml

from chironsim.errors import ChironError, UnknownNameError
from chironsim.workload.config import TraceColumns
from chironsim.workload.readers import ReadCounters, read_trace
from chironsim.workload.streams import sorted_rows

REGISTRY_PATH = Path(__file__).with_name("trace_registry.yaml")
_PERCENTILES = (50, 90, 99)


def _length_summary(prefix: str, values: np.ndarray) -> dict[str, float]:
    summary = {f"{prefix}_mean": float(values.mean())}
    for q, value in zip(_PERCENTILES, np.percentile(values, _PERCENTILES)):
        summary[f"{prefix}_p{q}"] = float(value)
    summary[f"{prefix}_max"] = int(values.max())
    return summary


def trace_stats(
    path: Path | str,
    format: str,
    columns: TraceColumns | None = None,
    reorder_window_s: float = 1.0,
) -> dict[str, Any]:
    """Summary of a trace file, in the file's own time (no window, scaling or clipping).

    Keys: ``rows`` (requests kept), ``dropped_failed`` (BurstGPT failures), ``duration_s``
    (last − first arrival), ``rate_rps`` (rows ÷ duration), ``ia_cv`` (coefficient of
    variation of inter-arrival gaps), ``zero_ia_frac`` (gaps of exactly 0), and for
    ``prompt``/``output`` tokens: mean, p50, p90, p99 (linear interpolation), max.
    Raises TraceFormatError (file and line) for a malformed trace, and for one without requests.
    """
    path = Path(path)
    counters = ReadCounters()
    prompts, outputs = array("q"), array("q")
    first = last = math.nan
    gap_count = zero_gaps = 0
    gap_sum = gap_sq = 0.0
    for row in sorted_rows(read_trace(path, format, columns, counters=counters), reorder_window_s, path):
        if prompts:
            gap = row.arrival - last
            gap_count += 1
            gap_sum += gap
            gap_sq += gap * gap
            zero_gaps += gap == 0
        else:
            first = row.arrival
        last = row.arrival
        prompts.append(row.prompt_tokens)
        outputs.append(row.output_tokens)
    duration = last - first
    stats: dict[str, Any] = {
        "rows": len(prompts),
        "dropped_failed": counters.dropped_failed,
        "duration_s": duration,
        "rate_rps": len(prompts) / duration if duration > 0 else math.nan,
    }
    if gap_count >= 2 and gap_sum > 0:
        mean = gap_sum / gap_count
        variance = max(gap_sq / gap_count - mean * mean, 0.0) * gap_count / (gap_count - 1)
        stats["ia_cv"] = math.sqrt(variance) / mean
    else:
        stats["ia_cv"] = math.nan
    stats["zero_ia_frac"] = zero_gaps / gap_count if gap_count else math.nan
    stats.update(_length_summary("prompt", np.frombuffer(prompts, dtype=np.int64)))
    stats.update(_length_summary("output", np.frombuffer(outputs, dtype=np.int64)))
    return stats


def load_registry(path: Path = REGISTRY_PATH) -> dict[str, dict[str, Any]]:
    """The downloadable traces: name → {url, format, licence, source, rows, notes}."""
    with open(path, encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def known_traces() -> dict[str, dict[str, Any]]:
    """Names ``download_trace`` accepts, each with its url, format, licence, source, rows."""
    return load_registry()


Opener = Callable[[str], IO[bytes]]


def _default_opener(url: str) -> IO[bytes]:
    request = urllib.request.Request(url, headers={"User-Agent": "chironsim-trace-download"})
    return urllib.request.urlopen(request, timeout=60)  # noqa: S310 (https URLs from the registry)


def download_trace(name: str, dest_dir: Path | str, opener: Opener | None = None) -> Path:
    """Download registered trace ``name`` into ``dest_dir`` and return the file's path.

    The bytes go to a temporary file in ``dest_dir`` that is renamed into place only when
    complete, so an interrupted download never leaves a truncated trace under the final name.
    An existing file of that name is returned as is. ``opener`` (url → binary file object)
    replaces urllib, e.g. to add a proxy or in tests.
    """
    registry = load_registry()
    if name not in registry:
        raise UnknownNameError("trace", name, list(registry))
    url = registry[name]["url"]
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    target = dest_dir / url.rsplit("/", 1)[-1]
    if target.exists():
        return target
    handle, temp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=dest_dir)
    try:
        with os.fdopen(handle, "wb") as out:
            with (opener or _default_opener)(url) as response:
                shutil.copyfileobj(response, out, length=1 << 20)
        os.replace(temp_name, target)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        Path(temp_name).unlink(missing_ok=True)
        raise ChironError(
            f"could not download trace {name!r} from {url}: {exc}. Check the network, or "
            f"download the file by hand into {dest_dir}"
        ) from exc
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    return target
