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

Every failure is a :class:`TraceFormatError` with the file and, where one exists, the line (a
Parquet table's row): a bad value (see ``tracevalues.py`` for the bounds), a line the format
cannot parse, and a file that cannot be read as text (``tracefile.py``: truncated or fake
gzip, bytes that are not UTF-8). A trace that yields no request at all (an empty file, a
header alone, blank lines, only failed BurstGPT rows) is an error too, whatever the format.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timezone
from pathlib import Path
from typing import IO, NamedTuple

from chironsim.errors import ConfigError, TraceFormatError
from chironsim.workload.config import TraceColumns
from chironsim.workload.timeparse import DatetimeParser
from chironsim.workload.tracefile import READ_ERRORS, open_text, read_failure, shown
from chironsim.workload.tracevalues import (
    check_seconds,
    json_count,
    json_time_ms,
    parse_count,
    parse_time,
)


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


def _header_indices(
    header: list[str] | None, required: list[str], path: Path, fmt: str, line: int | None = 1
) -> list[int]:
    """Where the required columns are; ``line`` is None for a Parquet schema."""
    expected = ", ".join(required)
    if header is None:
        raise TraceFormatError(
            path, line, f"empty file, no requests; a {fmt} trace needs a header with columns {expected}")
    names = [name.strip() for name in header]
    missing = [name for name in required if name not in names]
    if missing:
        found = ", ".join(shown(n)[1:-1] for n in names[:12]) + (", …" if len(names) > 12 else "")
        raise TraceFormatError(
            path,
            line,
            f"header lacks column(s) {', '.join(missing)}; a {fmt} trace needs columns "
            f"{expected} (found: {found})",
        )
    return [names.index(name) for name in required]


def _no_requests(path: Path, counters: ReadCounters, rows_before: int, what: str) -> TraceFormatError:
    """The error for a trace that yielded nothing: ``what`` says what the file held instead."""
    read = counters.rows - rows_before
    if read:
        what = f"all {read} rows are failed requests (0 response tokens), which are dropped"
    return TraceFormatError(path, None, f"no requests: {what}")


def _read_csv(
    path: Path, fmt: str, layout: _CsvLayout, need_arrival: bool, counters: ReadCounters
) -> Iterator[TraceRow]:
    required = _required(layout, need_arrival)
    parser = DatetimeParser()
    rows_before, kept = counters.rows, 0
    with open_text(path) as handle:
        reader = csv.reader(handle)
        try:
            header = next(reader, None)
        except READ_ERRORS as exc:
            raise read_failure(path, 1, exc) from None
        indices = _header_indices(header, required, path, fmt)
        width = max(indices) + 1
        # Per row: the same checks, parses and messages in the same order as reading the
        # layout's fields one by one; only the lookups are hoisted out of the loop.
        arrival_at = indices[0] if need_arrival else -1
        prompt_at, output_at = indices[-2], indices[-1]
        unit, arrival_name = layout.unit, required[0]
        prompt_name, output_name = layout.prompt, layout.output
        drop_zero_output = layout.drop_zero_output
        new_row = tuple.__new__  # TraceRow(...) without the NamedTuple's Python __new__
        nan = math.nan
        while True:
            try:
                fields = next(reader)
            except StopIteration:
                break
            except READ_ERRORS as exc:
                raise read_failure(path, reader.line_num + 1, exc) from None
            line = reader.line_num
            if not fields or (len(fields) == 1 and not fields[0].strip()):
                continue  # blank line
            if len(fields) < width:
                raise TraceFormatError(
                    path, line, f"expected at least {width} fields, found {len(fields)}"
                )
            if arrival_at >= 0:
                arrival = parse_time(fields[arrival_at].strip(), unit, parser, path, line,
                                     arrival_name)
            else:
                arrival = nan
            prompt = parse_count(fields[prompt_at].strip(), path, line, prompt_name)
            output = parse_count(fields[output_at].strip(), path, line, output_name)
            counters.rows += 1
            if drop_zero_output and output == 0:
                counters.dropped_failed += 1
                continue
            kept += 1
            yield new_row(TraceRow, (line, arrival, prompt, output, None))
    if not kept:
        raise _no_requests(path, counters, rows_before, "the file has a header but no data rows")


#: Longest JSON line read (characters): a 10M-token prompt's hash_ids take ~150,000. A longer
#: "line" is a file without newlines, which would otherwise be read into memory whole.
MAX_JSON_LINE_CHARS = 4 * 2**20


def _numbered_lines(handle: IO[str], path: Path) -> Iterator[tuple[int, str]]:
    line = 0
    while True:
        try:
            text = handle.readline(MAX_JSON_LINE_CHARS)
        except READ_ERRORS as exc:
            raise read_failure(path, line + 1, exc) from None
        if not text:
            return
        line += 1
        if len(text) == MAX_JSON_LINE_CHARS and not text.endswith(("\n", "\r")):
            raise TraceFormatError(
                path, line, f"line longer than {MAX_JSON_LINE_CHARS:,} characters (not JSON lines?)")
        yield line, text


def _parse_json(text: str, path: Path, line: int) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        cut = "" if text.endswith(("\n", "\r")) else "; the file ends inside this line (truncated?)"
        raise TraceFormatError(path, line, f"not valid JSON ({exc.msg}){cut}") from None
    except ValueError:  # Python refuses to convert integers of more than 4,300 digits
        raise TraceFormatError(path, line, "a number of more than 4,300 digits") from None
    except RecursionError:
        raise TraceFormatError(path, line, "not valid JSON (nested too deeply)") from None


def _read_mooncake(
    path: Path, need_arrival: bool, counters: ReadCounters
) -> Iterator[TraceRow]:
    required = list(MOONCAKE_KEYS if need_arrival else MOONCAKE_KEYS[1:])
    rows_before = counters.rows
    with open_text(path) as handle:
        for line, text in _numbered_lines(handle, path):
            if not text.strip():
                continue
            record = _parse_json(text, path, line)
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
                arrival = json_time_ms(record["timestamp"], path, line, "timestamp")
            prompt = json_count(record["input_length"], path, line, "input_length")
            output = json_count(record["output_length"], path, line, "output_length")
            hashes = record.get("hash_ids")
            if hashes is not None:
                if not isinstance(hashes, list) or not all(
                    isinstance(h, int) and not isinstance(h, bool) for h in hashes
                ):
                    raise TraceFormatError(path, line, "hash_ids: expected a list of integers")
                hashes = tuple(hashes)
            counters.rows += 1
            yield TraceRow(line, arrival, prompt, output, hashes)
    if counters.rows == rows_before:
        raise TraceFormatError(path, None, "no requests: the file has no JSON lines")


#: What pyarrow raises for a file it cannot read: ArrowInvalid/ArrowIOError are ValueError and
#: OSError subclasses; conversions of out-of-range timestamps raise OverflowError.
_PARQUET_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError, OverflowError, EOFError)


def _arrow_message(exc: BaseException) -> str:
    """pyarrow's message on one line (it spans several), cut short."""
    return " ".join(str(exc).split())[:200]


def _open_parquet(path: Path):  # -> pyarrow.parquet.ParquetFile (imported lazily)
    import pyarrow as pa
    import pyarrow.parquet as pq  # only needed for this format

    try:
        # page checksums, where the writer stored them, catch a corrupt page
        return pq.ParquetFile(path, page_checksum_verification=True)
    except (*_PARQUET_ERRORS, pa.ArrowException) as exc:
        raise TraceFormatError(
            path, None, f"not a readable Parquet file; truncated? ({_arrow_message(exc)})") from None


def _parquet_batches(path: Path, handle, required: list[str]) -> Iterator[list[list]]:
    """The required columns of each record batch as Python lists, read errors made user errors.

    Row groups are read one at a time, so the error names the first row not read and its group.
    """
    import pyarrow as pa

    done = 0
    for group in range(handle.metadata.num_row_groups):
        batches = handle.iter_batches(batch_size=65_536, row_groups=[group], columns=required)
        while True:
            try:
                batch = next(batches, None)
                if batch is None:
                    break
                columns = [batch.column(i).to_pylist() for i in range(len(required))]
            except (*_PARQUET_ERRORS, pa.ArrowException) as exc:
                raise TraceFormatError(
                    path, done + 1, f"the rows from here on (row group {group}) cannot be read; "
                    f"corrupt or truncated? ({_arrow_message(exc)})") from None
            done += batch.num_rows
            yield columns


def _parquet_seconds(stamp: object, path: Path, row: int, column: str) -> float:
    """A Parquet timestamp column's value in seconds.

    A timestamp without a zone is wall-clock time, read as UTC as the date-time strings of
    CSV traces are: ``datetime.timestamp`` would take it as the machine's local time, so a
    daylight-saving change would move arrivals by an hour depending on where the run happens.
    """
    try:
        if stamp.tzinfo is None:  # type: ignore[attr-defined]
            stamp = stamp.replace(tzinfo=timezone.utc)  # type: ignore[attr-defined]
        seconds = float(stamp.timestamp())  # type: ignore[attr-defined]
    except (OverflowError, OSError, ValueError) as exc:
        raise TraceFormatError(path, row, f"{column}: bad timestamp {shown(stamp)} ({exc})") from None
    return check_seconds(seconds, stamp, path, row, column)


def _read_parquet(
    path: Path, layout: _CsvLayout, need_arrival: bool, counters: ReadCounters
) -> Iterator[TraceRow]:
    required = _required(layout, need_arrival)
    handle = _open_parquet(path)
    _header_indices(handle.schema_arrow.names, required, path, "parquet", line=None)
    parser = DatetimeParser()
    row_number = 0
    for columns in _parquet_batches(path, handle, required):
        for values in zip(*columns):
            row_number += 1
            strings = ["" if v is None else str(v) for v in values]
            if need_arrival:
                stamp = values[0]
                if hasattr(stamp, "timestamp"):  # a Parquet timestamp column
                    arrival = _parquet_seconds(stamp, path, row_number, required[0])
                else:
                    arrival = parse_time(strings[0], layout.unit, parser, path, row_number, required[0])
                strings = strings[1:]
            else:
                arrival = math.nan
            prompt = parse_count(strings[0], path, row_number, layout.prompt)
            output = parse_count(strings[1], path, row_number, layout.output)
            counters.rows += 1
            yield TraceRow(row_number, arrival, prompt, output, None)
    if not row_number:
        raise TraceFormatError(path, None, "no requests: the table has no rows")


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
    only provide lengths (e.g. Vidur's arXiv-summarisation length table). Raises
    TraceFormatError, as the rows are read, at the first thing wrong with the file.
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
    """Read the header and the first request; raise TraceFormatError if they cannot work.

    Cheap (one line, one compressed block, or one Parquet batch), and catches before a
    simulation starts what makes a trace unusable from its start: a missing column, plain
    text named ``.gz``, an empty file or a header alone. The rest of the file is checked as
    it is read; a whole-file check up front would cost a full read of traces that can hold
    tens of millions of rows.
    """
    rows = read_trace(path, fmt, columns, need_arrival=need_arrival)
    try:
        next(rows, None)  # an empty trace raises: no requests
    finally:
        rows.close()  # type: ignore[attr-defined]
