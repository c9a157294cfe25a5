"""One streaming reader per trace format, all yielding the same :class:`TraceRow`.

Readers go line by line (``csv`` module, one ``json.loads`` per line, Parquet record batches),
so a week-long trace is never held in memory. They check every field they use and raise
:class:`TraceFormatError` naming the file and line; they do not sort or re-base times (the
stream layer does, see ``streams.py``).

Format rules (the public schemas):
- ``azure`` (Azure LLM inference 2023/2024): ``TIMESTAMP`` date-time, ``ContextTokens``,
  ``GeneratedTokens``.
- ``burstgpt``: ``Timestamp`` (s since midnight of the first day), ``Request tokens``,
  ``Response tokens`` (also ``Model``, ``Total tokens``, ``Log Type``, unused). Rows with 0
  response tokens are failed requests (the BurstGPT README says so): they are dropped and
  counted in ``ReadCounters.dropped_failed``.
- ``mooncake``: JSON lines with ``timestamp`` (ms), ``input_length``, ``output_length`` and
  optional ``hash_ids`` (prefix-block ids) → ``prefix_hashes``.
- ``splitwise`` (Vidur's processed traces): ``arrived_at`` (s), ``num_prefill_tokens``,
  ``num_decode_tokens``.
- ``csv`` / ``parquet``: columns named by a :class:`TraceColumns` mapping.
Files ending in ``.gz`` are decompressed on the fly.
"""

from __future__ import annotations

import csv
import gzip
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, NamedTuple

from chironsim.errors import ConfigError, TraceFormatError
from chironsim.workload.config import TraceColumns
from chironsim.workload.timeparse import DatetimeParser


class TraceRow(NamedTuple):
    """One request as read: ``arrival`` in the trace's own seconds (nan when not read)."""

    line: int
    arrival: float
    prompt_tokens: int
    output_tokens: int
    prefix_hashes: tuple[int, ...] | None


@dataclass
class ReadCounters:
    """What a reader saw: data rows read, and rows dropped as failed requests."""

    rows: int = 0
    dropped_failed: int = 0


@dataclass(frozen=True)
class _CsvLayout:
    arrival: str | None
    prompt: str
    output: str
    unit: str  # s | ms | us | datetime
    drop_zero_output: bool


_UNIT_SECONDS = {"s": 1.0, "ms": 1e-3, "us": 1e-6}

_BUILTIN_CSV = {
    "azure": _CsvLayout("TIMESTAMP", "ContextTokens", "GeneratedTokens", "datetime", False),
    "burstgpt": _CsvLayout("Timestamp", "Request tokens", "Response tokens", "s", True),
    "splitwise": _CsvLayout("arrived_at", "num_prefill_tokens", "num_decode_tokens", "s", False),
}

MOONCAKE_KEYS = ("timestamp", "input_length", "output_length")


def _layout(fmt: str, columns: TraceColumns | None) -> _CsvLayout:
    if fmt in _BUILTIN_CSV:
        return _BUILTIN_CSV[fmt]
    assert columns is not None, "config validation requires columns for csv/parquet"
    return _CsvLayout(
        columns.arrival, columns.prompt_tokens, columns.output_tokens, columns.arrival_unit, False
    )


def _required(layout: _CsvLayout, need_arrival: bool) -> list[str]:
    names = [layout.prompt, layout.output]
    if need_arrival:
        if layout.arrival is None:
            raise ConfigError("an arrival column is needed but the columns mapping names none")
        names.insert(0, layout.arrival)
    return names


def open_text(path: Path) -> IO[str]:
    """Open a trace for reading as text (``.gz`` transparently); BOM stripped, newlines raw."""
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8-sig", newline="")
    return open(path, encoding="utf-8-sig", newline="")


def parse_count(text: str, path: Path, line: int, column: str) -> int:
    """A token count: a non-negative integer (``12`` or ``12.0``)."""
    try:
        value = int(text)
    except ValueError:
        try:
            as_float = float(text)
        except ValueError:
            raise TraceFormatError(path, line, f"{column}: not a number: {text!r}") from None
        if not as_float.is_integer():
            raise TraceFormatError(path, line, f"{column}: not an integer: {text!r}") from None
        value = int(as_float)
    if value < 0:
        raise TraceFormatError(path, line, f"{column}: negative token count {value}")
    return value


def _parse_time(text: str, unit: str, parser: DatetimeParser, path: Path, line: int, col: str) -> float:
    try:
        value = parser.seconds(text) if unit == "datetime" else float(text) * _UNIT_SECONDS[unit]
    except ValueError as exc:
        raise TraceFormatError(path, line, f"{col}: bad timestamp {text!r} ({exc})") from None
    if not math.isfinite(value):
        raise TraceFormatError(path, line, f"{col}: timestamp is not finite: {text!r}")
    return value


def _header_indices(
    header: list[str] | None, required: list[str], path: Path, fmt: str
) -> list[int]:
    expected = ", ".join(required)
    if header is None:
        raise TraceFormatError(path, 1, f"empty file; a {fmt} trace needs a header with columns {expected}")
    names = [name.strip() for name in header]
    missing = [name for name in required if name not in names]
    if missing:
        raise TraceFormatError(
            path,
            1,
            f"header lacks column(s) {', '.join(missing)}; a {fmt} trace needs columns "
            f"{expected} (found: {', '.join(names)})",
        )
    return [names.index(name) for name in required]


def _read_csv(
    path: Path, fmt: str, layout: _CsvLayout, need_arrival: bool, counters: ReadCounters
) -> Iterator[TraceRow]:
    required = _required(layout, need_arrival)
    parser = DatetimeParser()
    with open_text(path) as handle:
        reader = csv.reader(handle)
        try:
            indices = _header_indices(next(reader, None), required, path, fmt)
        except (UnicodeDecodeError, csv.Error) as exc:
            raise TraceFormatError(path, 1, f"not a readable CSV text file ({exc})") from None
        width = max(indices) + 1
        while True:
            try:
                fields = next(reader)
            except StopIteration:
                return
            except (UnicodeDecodeError, csv.Error) as exc:
                raise TraceFormatError(
                    path, reader.line_num + 1, f"not readable as CSV text ({exc})"
                ) from None
            line = reader.line_num
            if not fields or (len(fields) == 1 and not fields[0].strip()):
                continue  # blank line
            if len(fields) < width:
                raise TraceFormatError(
                    path, line, f"expected at least {width} fields, found {len(fields)}"
                )
            values = [fields[i].strip() for i in indices]
            if need_arrival:
                arrival = _parse_time(values[0], layout.unit, parser, path, line, required[0])
                values = values[1:]
            else:
                arrival = math.nan
            prompt = parse_count(values[0], path, line, layout.prompt)
            output = parse_count(values[1], path, line, layout.output)
            counters.rows += 1
            if layout.drop_zero_output and output == 0:
                counters.dropped_failed += 1
                continue
            yield TraceRow(line, arrival, prompt, output, None)


def _numbered_lines(handle: IO[str], path: Path) -> Iterator[tuple[int, str]]:
    line = 0
    while True:
        try:
            text = handle.readline()
        except UnicodeDecodeError as exc:
            raise TraceFormatError(path, line + 1, f"not readable as UTF-8 text ({exc})") from None
        if not text:
            return
        line += 1
        yield line, text


def _json_count(record: dict, key: str, path: Path, line: int) -> int:
    value = record[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TraceFormatError(path, line, f"{key}: not a number: {value!r}")
    if isinstance(value, float) and not value.is_integer():
        raise TraceFormatError(path, line, f"{key}: not an integer: {value!r}")
    if value < 0:
        raise TraceFormatError(path, line, f"{key}: negative token count {value}")
    return int(value)


def _read_mooncake(
    path: Path, need_arrival: bool, counters: ReadCounters
) -> Iterator[TraceRow]:
    required = list(MOONCAKE_KEYS if need_arrival else MOONCAKE_KEYS[1:])
    with open_text(path) as handle:
        for line, text in _numbered_lines(handle, path):
            if not text.strip():
                continue
            try:
                record = json.loads(text)
            except json.JSONDecodeError as exc:
                raise TraceFormatError(path, line, f"not valid JSON ({exc.msg})") from None
            if not isinstance(record, dict):
                raise TraceFormatError(path, line, "expected a JSON object per line")
            missing = [key for key in required if key not in record]
            if missing:
                raise TraceFormatError(
                    path, line, f"missing key(s) {', '.join(missing)}; a mooncake line needs "
                    f"{', '.join(required)} (and optionally hash_ids)"
                )
            arrival = math.nan
            if need_arrival:
                stamp = record["timestamp"]
                if isinstance(stamp, bool) or not isinstance(stamp, (int, float)) or not math.isfinite(stamp):
                    raise TraceFormatError(path, line, f"timestamp: not a number: {stamp!r}")
                arrival = stamp / 1000.0
            prompt = _json_count(record, "input_length", path, line)
            output = _json_count(record, "output_length", path, line)
            hashes = record.get("hash_ids")
            if hashes is not None:
                if not isinstance(hashes, list) or not all(
                    isinstance(h, int) and not isinstance(h, bool) for h in hashes
                ):
                    raise TraceFormatError(path, line, "hash_ids: expected a list of integers")
                hashes = tuple(hashes)
            counters.rows += 1
            yield TraceRow(line, arrival, prompt, output, hashes)


def _read_parquet(
    path: Path, layout: _CsvLayout, need_arrival: bool, counters: ReadCounters
) -> Iterator[TraceRow]:
    import pyarrow.parquet as pq  # only needed for this format

    required = _required(layout, need_arrival)
    try:
        handle = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types for a non-Parquet file
        raise TraceFormatError(path, None, f"not a readable Parquet file ({exc})") from None
    _header_indices(handle.schema_arrow.names, required, path, "parquet")
    parser = DatetimeParser()
    row_number = 0
    for batch in handle.iter_batches(columns=required, batch_size=65_536):
        columns = [batch.column(i).to_pylist() for i in range(len(required))]
        for values in zip(*columns):
            row_number += 1
            strings = ["" if v is None else str(v) for v in values]
            if need_arrival:
                stamp = values[0]
                if hasattr(stamp, "timestamp"):  # a Parquet timestamp column
                    arrival = float(stamp.timestamp())
                else:
                    arrival = _parse_time(strings[0], layout.unit, parser, path, row_number, required[0])
                strings = strings[1:]
            else:
                arrival = math.nan
            prompt = parse_count(strings[0], path, row_number, layout.prompt)
            output = parse_count(strings[1], path, row_number, layout.output)
            counters.rows += 1
            yield TraceRow(row_number, arrival, prompt, output, None)


def read_trace(
    path: Path,
    fmt: str,
    columns: TraceColumns | None = None,
    *,
    need_arrival: bool = True,
    counters: ReadCounters | None = None,
) -> Iterator[TraceRow]:
    """Stream the rows of a trace file in file order.

    ``need_arrival=False`` skips (and does not require) the arrival column, for files that
    only provide lengths (e.g. Vidur's arXiv-summarisation length table).
    """
    counters = counters if counters is not None else ReadCounters()
    if fmt == "mooncake":
        return _read_mooncake(path, need_arrival, counters)
    layout = _layout(fmt, columns)
    if fmt == "parquet":
        return _read_parquet(path, layout, need_arrival, counters)
    return _read_csv(path, fmt, layout, need_arrival, counters)


def check_trace_header(
    path: Path, fmt: str, columns: TraceColumns | None = None, *, need_arrival: bool = True
) -> None:
    """Read only the header (or first record) and raise TraceFormatError if it cannot work."""
    if fmt == "mooncake":
        rows = read_trace(path, fmt, need_arrival=need_arrival)
        next(rows, None)  # the first record shows whether the lines have the needed keys
        rows.close()  # type: ignore[attr-defined]
        return
    layout = _layout(fmt, columns)
    required = _required(layout, need_arrival)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        try:
            names = pq.ParquetFile(path).schema_arrow.names
        except Exception as exc:
            raise TraceFormatError(path, None, f"not a readable Parquet file ({exc})") from None
        _header_indices(names, required, path, fmt)
        return
    with open_text(path) as handle:
        try:
            header = next(csv.reader(handle), None)
        except (UnicodeDecodeError, csv.Error) as exc:
            raise TraceFormatError(path, 1, f"not a readable CSV text file ({exc})") from None
        _header_indices(header, required, path, fmt)
