"""The checks every trace value passes: token counts and arrival times, with their bounds.

Bounds are what a real trace could mean, chosen so that everything past the readers can trust
its inputs (a count fits an int64 column of the results; a time stays a finite float):

- a token count is a whole number in [0, ``MAX_TOKENS``], the bound the config's lengths use
  (``chironsim.limits``: the longest context windows offered today). Zero is kept because
  real traces have such rows (a zero prompt becomes 1 in the stream and is counted; BurstGPT's
  zero responses are failures that get dropped). Anything beyond is a corrupt or mis-mapped
  column, and would not fit the int64 columns of the results.
- an arrival time is finite and within ±``MAX_ABS_TIMESTAMP_S`` seconds: beyond any date-time
  (year 9999 is 2.5e11 s of Unix time), but below what Unix times in ms, µs or ns give when
  ``arrival_unit`` is one step too coarse (≥ 1.7e12), so that mistake is caught.
"""

from __future__ import annotations

import math
from pathlib import Path

from chironsim.errors import TraceFormatError
from chironsim.limits import MAX_TOKENS
from chironsim.workload.timeparse import DatetimeParser
from chironsim.workload.tracefile import shown

MAX_ABS_TIMESTAMP_S = 1e12

UNIT_SECONDS = {"s": 1.0, "ms": 1e-3, "us": 1e-6}


def _out_of_range(path: Path, line: int, column: str, text: object) -> TraceFormatError:
    return TraceFormatError(
        path, line, f"{column}: token count {shown(text)} is out of range; expected a whole "
        f"number from 0 to {MAX_TOKENS:,}")


def _count_from_float(text: str, path: Path, line: int, column: str) -> int:
    """The slow path of :func:`parse_count`: ``12.0``, ``1e3``, and every kind of bad text."""
    try:
        as_float = float(text)
    except ValueError:
        raise TraceFormatError(path, line, f"{column}: not a number: {shown(text)}") from None
    if math.isnan(as_float):
        raise TraceFormatError(path, line, f"{column}: not a number: {shown(text)}")
    if as_float < 0:
        raise TraceFormatError(path, line, f"{column}: negative token count {shown(text)}")
    if as_float > MAX_TOKENS:  # also inf and 5,000-digit integers
        raise _out_of_range(path, line, column, text)
    if not as_float.is_integer():
        raise TraceFormatError(path, line, f"{column}: not an integer: {shown(text)}")
    return int(as_float)


def parse_count(text: str, path: Path, line: int, column: str) -> int:
    """A token count written as text: a whole number (``12`` or ``12.0``) in range."""
    try:
        value = int(text)
    except ValueError:
        return _count_from_float(text, path, line, column)
    if 0 <= value <= MAX_TOKENS:
        return value
    if value < 0:
        raise TraceFormatError(path, line, f"{column}: negative token count {shown(value)}")
    raise _out_of_range(path, line, column, text)


def json_count(value: object, path: Path, line: int, column: str) -> int:
    """A token count from a JSON value: an integral number in range (not a bool or string)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TraceFormatError(path, line, f"{column}: not a number: {shown(value)}")
    if isinstance(value, float):
        return _count_from_float(repr(value), path, line, column)
    if 0 <= value <= MAX_TOKENS:
        return value
    if value < 0:
        raise TraceFormatError(path, line, f"{column}: negative token count {shown(value)}")
    raise _out_of_range(path, line, column, value)


def check_seconds(value: float, text: object, path: Path, line: int, column: str) -> float:
    """``value`` (seconds, read from ``text``) if it is a finite time in range."""
    if -MAX_ABS_TIMESTAMP_S <= value <= MAX_ABS_TIMESTAMP_S:  # false for nan too
        return value
    if math.isnan(value):
        raise TraceFormatError(path, line, f"{column}: timestamp is not a number: {shown(text)}")
    raise TraceFormatError(
        path, line, f"{column}: timestamp {shown(text)} is out of range: more than "
        f"{MAX_ABS_TIMESTAMP_S:.0e} s (30,000 years) from 0; is the arrival unit right?")


def parse_time(text: str, unit: str, parser: DatetimeParser, path: Path, line: int,
               column: str) -> float:
    """An arrival time written as text, in seconds (a number in ``unit``, or a date-time)."""
    try:
        value = parser.seconds(text) if unit == "datetime" else float(text) * UNIT_SECONDS[unit]
    except ValueError as exc:
        reason = str(exc)[:100]  # float()'s message repeats the whole text
        raise TraceFormatError(path, line, f"{column}: bad timestamp {shown(text)} ({reason})") from None
    return check_seconds(value, text, path, line, column)


def json_time_ms(value: object, path: Path, line: int, column: str) -> float:
    """An arrival time from a JSON number of milliseconds, in seconds."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TraceFormatError(path, line, f"{column}: not a number: {shown(value)}")
    try:
        seconds = value / 1000.0
    except OverflowError:  # an integer of hundreds of digits has no float
        seconds = math.inf
    return check_seconds(seconds, value, path, line, column)
