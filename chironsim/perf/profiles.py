"""Readers for measured operator timings in Vidur's profile format (calibration input).

Three CSV kinds exist: `mlp.csv` (per-operator times of one transformer layer's non-attention
kernels, keyed by num_tokens and the tensor-parallel shard shape), `all_reduce.csv` (NCCL
all-reduce time by message size, worker count and GPUs per node) and `send_recv.csv`
(point-to-point time by message size, within a node or across two). Times are in milliseconds in the files and
seconds here. A malformed file raises TraceFormatError naming the file, line and column: a cell
that is not a finite positive number (shapes: a whole number), a ragged row, a file that is
empty or has a header only, and one that cannot be read as text (a truncated or fake ``.gz``,
bytes that are not UTF-8; see ``chironsim.workload.tracefile``).
"""

from __future__ import annotations

import io
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from chironsim.errors import TraceFormatError
from chironsim.workload.tracefile import READ_ERRORS, open_text, read_failure, shown

GEMM_OPS = ("attn_pre_proj", "attn_post_proj", "mlp_up_proj", "mlp_down_proj")
ELEMENTWISE_OPS = ("input_layernorm", "attn_rope", "post_attention_layernorm", "mlp_act", "add")
_SHAPE_COLUMNS = ("n_head", "n_kv_head", "n_embd", "n_expanded_embd", "vocab_size",
                  "num_tokens", "num_tensor_parallel_workers")
_ALL_REDUCE_COLUMNS = ("time_stats.all_reduce.median", "num_workers", "size", "devices_per_node")
_SEND_RECV_COLUMNS = ("time_stats.send_recv.median", "num_workers", "size", "devices_per_node")
_WHOLE_COLUMNS = _SHAPE_COLUMNS + ("num_workers", "size", "devices_per_node")
#: Shapes, token counts, worker counts and message sizes are whole numbers below this; it keeps
#: their conversion to int64 exact.
_MAX_WHOLE = 2**53


def _median(op: str) -> str:
    return f"time_stats.{op}.median"


@dataclass(frozen=True)
class Profiles:
    """Measured timings from several files, tidy and in seconds.

    operators: one row per (file, tp, num_tokens, op) with columns model, tp, tokens, op,
    seconds, n_head, n_kv_head, n_embd, n_expanded_embd, vocab_size, gated.
    all_reduce: one row per (collective, workers, devices_per_node, size) with columns
    collective (``all_reduce`` or ``send_recv``), workers, devices_per_node, size, seconds.
    """

    operators: pd.DataFrame
    all_reduce: pd.DataFrame
    files: tuple[Path, ...]


def _read_csv(path: Path) -> pd.DataFrame:
    if not path.exists():
        raise TraceFormatError(path, None, "file not found")
    with open_text(path) as handle:  # decompresses .gz and strips a BOM as trace files do
        try:
            text = handle.read()
        except READ_ERRORS as exc:
            raise read_failure(path, None, exc) from None
    try:
        frame = pd.read_csv(io.StringIO(text), skip_blank_lines=False)
    except pd.errors.EmptyDataError:
        raise TraceFormatError(path, None, "the file is empty") from None
    except pd.errors.ParserError as exc:
        match = re.search(r"line (\d+)", str(exc))
        raise TraceFormatError(path, int(match.group(1)) if match else None, f"not a CSV file: {exc}") from None
    if frame.empty:
        raise TraceFormatError(path, None, "no data rows: the file has a header only")
    return frame


def _cell_float(value: object) -> float:
    """One cell as a float; nan where it is not a number (inf where its digits overflow)."""
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        return math.nan


def _as_float(column: pd.Series) -> pd.Series:
    try:
        return pd.to_numeric(column, errors="coerce").astype(float)
    except (OverflowError, TypeError, ValueError):  # an integer too long for float64
        return column.map(_cell_float).astype(float)


def _numeric(frame: pd.DataFrame, path: Path, columns: tuple[str, ...], positive: tuple[str, ...]) -> pd.DataFrame:
    """Columns as finite floats; the first bad cell is reported with its line (header = line 1).

    Columns in ``_WHOLE_COLUMNS`` (shapes, counts, sizes) must hold whole numbers below 2^53.
    """
    out = pd.DataFrame(index=frame.index)
    for column in columns:
        values = _as_float(frame[column])
        array = values.to_numpy()
        bad = ~np.isfinite(array) | (array <= 0 if column in positive else array < 0)
        whole = column in _WHOLE_COLUMNS
        if whole:
            bad |= (np.mod(np.where(bad, 0, array), 1) != 0) | (np.where(bad, 0, array) > _MAX_WHOLE)
        if bad.any():
            row = int(bad.nonzero()[0][0])
            position = frame.columns.get_loc(column) + 1
            raw = frame[column].iloc[row]
            need = "a positive" if column in positive else "a non-negative"
            need += " whole number below 2^53" if whole else " number"
            what = ("the cell is empty; expected" if pd.isna(raw)
                    else f"{shown(raw.item() if isinstance(raw, np.generic) else raw)} is not")
            raise TraceFormatError(path, row + 2, f"column {column!r} (column {position}): {what} {need}")
        out[column] = values
    return out


def _operators(frame: pd.DataFrame, path: Path) -> pd.DataFrame:
    ops = [op for op in GEMM_OPS + ELEMENTWISE_OPS if _median(op) in frame.columns]
    times = tuple(_median(op) for op in ops)
    values = _numeric(frame, path, _SHAPE_COLUMNS + times, positive=_SHAPE_COLUMNS + times)
    gated = frame["use_gated_mlp"].astype(str).str.lower().eq("true") if "use_gated_mlp" in frame else True
    # Vidur keeps data/profiling/compute/<gpu>/<org>/<model>/mlp.csv; copies are named <gpu>_<model>_mlp.csv
    label = path.parent.name if path.stem == "mlp" else re.sub(r"^[a-z0-9]+_|_mlp$", "", path.stem)
    base = values[list(_SHAPE_COLUMNS)].assign(model=label, gated=gated)
    base = base.rename(columns={"num_tokens": "tokens", "num_tensor_parallel_workers": "tp"})
    base = base.astype({"tokens": int, "tp": int})
    tidy = []
    for op in ops:
        tidy.append(base.assign(op=op, seconds=values[_median(op)] * 1e-3))
    long = pd.concat(tidy, ignore_index=True)
    # repeated measurements of one shape: keep their median
    keys = ["model", "tp", "tokens", "op", "n_head", "n_kv_head", "n_embd", "n_expanded_embd", "vocab_size", "gated"]
    return long.groupby(keys, as_index=False)["seconds"].median()


def _collective(frame: pd.DataFrame, path: Path, collective: str) -> pd.DataFrame:
    columns = _ALL_REDUCE_COLUMNS if collective == "all_reduce" else _SEND_RECV_COLUMNS
    values = _numeric(frame, path, columns, positive=columns)
    values = values.rename(columns={columns[0]: "seconds", "num_workers": "workers"})
    values["seconds"] *= 1e-3
    values = values.astype({"workers": int, "devices_per_node": int}).assign(collective=collective)
    return values.groupby(["collective", "workers", "devices_per_node", "size"], as_index=False)["seconds"].median()


def read_profiles(paths: list[Path] | list[str]) -> Profiles:
    """Read Vidur mlp.csv, all_reduce.csv and send_recv.csv files; the kind is recognised by the columns."""
    operators, reduces, files = [], [], []
    for raw in paths:
        path = Path(raw)
        frame = _read_csv(path)
        columns = set(frame.columns)
        if set(_ALL_REDUCE_COLUMNS) <= columns:
            reduces.append(_collective(frame, path, "all_reduce"))
        elif set(_SEND_RECV_COLUMNS) <= columns:
            reduces.append(_collective(frame, path, "send_recv"))
        elif set(_SHAPE_COLUMNS) <= columns and all(_median(op) in columns for op in GEMM_OPS):
            operators.append(_operators(frame, path))
        else:
            wanted = [c for c in _SHAPE_COLUMNS + tuple(_median(op) for op in GEMM_OPS) if c not in columns]
            raise TraceFormatError(
                path, 1,
                "header is neither a Vidur mlp.csv nor an all_reduce.csv or send_recv.csv profile; "
                f"missing columns: {', '.join(wanted)}",
            )
        files.append(path)
    empty_ops = pd.DataFrame(columns=["model", "tp", "tokens", "op", "seconds"])
    empty_ar = pd.DataFrame(columns=["collective", "workers", "devices_per_node", "size", "seconds"])
    return Profiles(
        operators=pd.concat(operators, ignore_index=True) if operators else empty_ops,
        all_reduce=pd.concat(reduces, ignore_index=True) if reduces else empty_ar,
        files=tuple(files),
    )
