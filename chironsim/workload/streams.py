"""One lazy generator of :class:`RequestSpec` per stream kind, each sorted by arrival.

Trace replay semantics (also in ``TraceStream``'s docstring): rows are sorted within
``reorder_window_s``, timed relative to the trace's first arrival, cut to ``time_window``,
re-based, divided by ``rate_scale`` and shifted by ``start``; lengths are clipped to
[1, max] (a zero prompt becomes 1 and is counted, BurstGPT failures are dropped and counted).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from chironsim.errors import TraceFormatError
from chironsim.workload.arrivals import arrival_chunks
from chironsim.workload.config import BatchStream, EmpiricalLength, SyntheticStream, TraceStream
from chironsim.workload.lengths import EmpiricalTable, LengthSource
from chironsim.workload.readers import ReadCounters, TraceRow, read_trace
from chironsim.workload.spec import RequestSpec


@dataclass
class StreamStats(ReadCounters):
    """What one stream produced so far (counts grow as the workload is consumed).

    ``rows``/``dropped_failed``: trace rows read / dropped as failed (BurstGPT);
    ``before_window``: trace rows earlier than ``time_window``; ``emitted``: requests yielded
    by the stream; ``prompt_clipped``/``output_clipped``: lengths moved into [1, max].
    """

    kind: str = ""
    request_class: str = ""
    emitted: int = 0
    before_window: int = 0
    prompt_clipped: int = 0
    output_clipped: int = 0


def sorted_rows(rows: Iterator[TraceRow], window_s: float, path: Path) -> Iterator[TraceRow]:
    """Yield rows by arrival, sorting out-of-order lines that are at most ``window_s`` late.

    A row is held until a row ``window_s`` later has been read; a row earlier than the latest
    seen by more than ``window_s`` cannot be placed any more and is a format error. Ties keep
    file order.
    """
    held: list[tuple[float, int, TraceRow]] = []
    latest = -math.inf
    for row in rows:
        if row.arrival < latest - window_s:
            raise TraceFormatError(
                path,
                row.line,
                f"timestamp goes back {latest - row.arrival:.6g} s, more than the "
                f"reorder_window_s of {window_s:g} s that is sorted automatically",
            )
        heapq.heappush(held, (row.arrival, row.line, row))
        if row.arrival > latest:  # max(latest, row.arrival), NaN included
            latest = row.arrival
        while held and held[0][0] <= latest - window_s:
            yield heapq.heappop(held)[2]
    while held:
        yield heapq.heappop(held)[2]


def _clip(value: int, upper: int | None) -> int:
    if value < 1:
        return 1
    if upper is not None and value > upper:
        return upper
    return value


def trace_stream(stream: TraceStream, path: Path, stats: StreamStats) -> Iterator[RequestSpec]:
    """Replay a trace file lazily (see the module docstring for the time transformation)."""
    rows = sorted_rows(read_trace(path, stream.format, stream.columns, counters=stats),
                       stream.reorder_window_s, path)
    window_start, window_end = stream.time_window or (0.0, math.inf)
    # The stream's settings, read once (a validated config does not change during a run).
    max_prompt, max_output = stream.max_prompt_tokens, stream.max_output_tokens
    start, rate_scale, limit = stream.start, stream.rate_scale, stream.limit
    stream_deadline, request_class = stream.deadline, stream.request_class
    origin: float | None = None
    for row in rows:
        if origin is None:
            origin = row.arrival
        offset = row.arrival - origin
        if offset < window_start:
            stats.before_window += 1
            continue
        if offset >= window_end:
            return  # rows are sorted: nothing later can be inside the window
        prompt = _clip(row.prompt_tokens, max_prompt)
        output = _clip(row.output_tokens, max_output)
        stats.prompt_clipped += prompt != row.prompt_tokens
        stats.output_clipped += output != row.output_tokens
        arrival = start + (offset - window_start) / rate_scale
        deadline = arrival + stream_deadline if stream_deadline is not None else None
        stats.emitted += 1
        yield RequestSpec(arrival, prompt, output, request_class, deadline, row.prefix_hashes)
        if limit is not None and stats.emitted >= limit:
            return


def _length_source(
    stream: SyntheticStream | BatchStream,
    rngs: list[np.random.Generator],
    table: Callable[[EmpiricalLength], EmpiricalTable],
) -> LengthSource:
    return LengthSource(
        stream.prompt_tokens,
        stream.output_tokens,
        rngs[1],
        rngs[2],
        stream.max_prompt_tokens,
        stream.max_output_tokens,
        table,
    )


def synthetic_stream(
    stream: SyntheticStream,
    rngs: list[np.random.Generator],
    table: Callable[[EmpiricalLength], EmpiricalTable],
    stats: StreamStats,
) -> Iterator[RequestSpec]:
    """Generated arrivals (``rngs[0]``) with lengths (``rngs[1]`` prompt, ``rngs[2]`` output)."""
    lengths = _length_source(stream, rngs, table)
    duration = stream.duration_s if stream.duration_s is not None else math.inf
    remaining = stream.num_requests if stream.num_requests is not None else math.inf
    for chunk in arrival_chunks(stream.arrival, rngs[0]):
        for offset in chunk.tolist():
            if offset >= duration or remaining <= 0:
                return
            arrival = stream.start + offset
            prompt, output = lengths.next_pair()
            stats.prompt_clipped, stats.output_clipped = lengths.prompt_clipped, lengths.output_clipped
            deadline = arrival + stream.deadline if stream.deadline is not None else None
            remaining -= 1
            stats.emitted += 1
            yield RequestSpec(arrival, prompt, output, stream.request_class, deadline)


def batch_stream(
    stream: BatchStream,
    rngs: list[np.random.Generator],
    table: Callable[[EmpiricalLength], EmpiricalTable],
    stats: StreamStats,
) -> Iterator[RequestSpec]:
    """A batch job: evenly spaced submissions over the window, one deadline for the job."""
    lengths = _length_source(stream, rngs, table)
    deadline = stream.submit_at + stream.deadline_s
    spacing = stream.window_s / stream.num_requests
    for index in range(stream.num_requests):
        prompt, output = lengths.next_pair()
        stats.prompt_clipped, stats.output_clipped = lengths.prompt_clipped, lengths.output_clipped
        stats.emitted += 1
        yield RequestSpec(
            stream.submit_at + index * spacing, prompt, output, stream.request_class, deadline
        )
