"""Trace mistakes: compression, encoding, truncation, counts and times out of range, empty files.

Each case writes a small trace beside a scenario that replays it (or runs ``chironsim traces
stats`` on it) and expects the error at ``FILE:LINE`` (a Parquet table's row; the file alone
where no line exists). Trace bodies are read while the simulation runs, so most of these fail
mid-run: the cases check that even then nothing is written. The scenario runs until the trace
ends (``duration_s: null``) so that a late bad line is always reached.
"""

from __future__ import annotations

import gzip
import io
import zlib
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from corpus.case import Case, as_yaml, changed, light_scenario

AZURE_HEADER = "TIMESTAMP,ContextTokens,GeneratedTokens\n"
SPLITWISE_HEADER = "arrived_at,num_prefill_tokens,num_decode_tokens\n"
BURSTGPT_HEADER = "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
GENERIC_COLUMNS = {"arrival": "t", "prompt_tokens": "in", "output_tokens": "out",
                   "arrival_unit": "ms"}
PARQUET_COLUMNS = {"arrival": "t", "prompt_tokens": "p", "output_tokens": "o"}


def azure_rows(count: int, start: int = 0) -> str:
    """Azure-format rows, one request a second from 2000-01-01 00:00:00."""
    return "".join(f"2000-01-01 00:{i // 60:02d}:{i % 60:02d}.0000000,{200 + i},{10 + i % 9}\n"
                   for i in range(start, start + count))


def splitwise_rows(count: int) -> str:
    return "".join(f"{i * 0.5:.1f},{200 + i},{10 + i % 9}\n" for i in range(count))


def mooncake_line(i: int, **values: Any) -> str:
    fields = {"timestamp": 500 * i, "input_length": 200 + i, "output_length": 10 + i % 9,
              "hash_ids": [i]} | values
    return "{" + ", ".join(f'"{k}": {v}' for k, v in fields.items()) + "}\n"


def mooncake_lines(count: int) -> str:
    return "".join(mooncake_line(i) for i in range(count))


def with_line(text: str, number: int, line: str) -> str:
    """``text`` with its line ``number`` (1-based, header = 1) replaced by ``line``."""
    lines = text.splitlines(keepends=True)
    lines[number - 1] = line
    return "".join(lines)


def parquet_bytes(table: pa.Table, row_group_size: int = 4) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, row_group_size=row_group_size)
    return sink.getvalue()


def good_parquet_table(rows: int = 12) -> pa.Table:
    return pa.table({"t": [0.5 * i for i in range(rows)], "p": [200 + i for i in range(rows)],
                     "o": [10 + i for i in range(rows)]})


def corrupt_second_row_group(data: bytes) -> bytes:
    """``data`` with the pages of row group 1's second column overwritten."""
    chunk = pq.ParquetFile(io.BytesIO(data)).metadata.row_group(1).column(1)
    start, size = chunk.data_page_offset, chunk.total_compressed_size
    return data[:start] + b"\xff" * size + data[start + size:]


def bad_byte_at(text: str, number: int) -> bytes:
    """``text`` as UTF-8 with a Latin-1 é put into line ``number``."""
    lines = text.encode().split(b"\n")
    lines[number - 1] = lines[number - 1][:5] + b"\xe9" + lines[number - 1][5:]
    return b"\n".join(lines)


def trace_case(name: str, fmt: str, file: str, content: str | bytes, expect: list[str],
               columns: dict[str, str] | None = None, **stream: Any) -> Case:
    """``chironsim run`` on a scenario replaying ``file`` until it ends."""
    spec: dict[str, Any] = {"kind": "trace", "format": fmt, "path": file,
                            "request_class": "interactive", **stream}
    if columns is not None:
        spec["columns"] = columns
    data = changed(light_scenario(), **{"workload.streams.0": spec, "duration_s": None})
    return Case(name, {"scenario.yaml": as_yaml(data), file: content},
                ["run", "scenario.yaml", "--quiet", "--out", "results/x"], expect)


def stats_case(name: str, fmt: str, file: str, content: str | bytes, expect: list[str]) -> Case:
    """``chironsim traces stats FILE --format FMT``."""
    return Case(name, {file: content}, ["traces", "stats", file, "--format", fmt], expect)


def lengths_case(name: str, content: str, expect: list[str]) -> Case:
    """A synthetic stream drawing its output lengths from ``lengths.csv`` (Vidur's table)."""
    data = changed(light_scenario(), **{"workload.streams.0.output_tokens": {
        "kind": "empirical", "path": "lengths.csv", "format": "splitwise"}})
    return Case(name, {"scenario.yaml": as_yaml(data), "lengths.csv": content},
                ["run", "scenario.yaml", "--quiet", "--out", "results/x"], expect)


AZURE = AZURE_HEADER + azure_rows(400)
AZURE_GZ = gzip.compress(AZURE.encode(), mtime=0)
SPLITWISE = SPLITWISE_HEADER + splitwise_rows(30)
CUT_GZ = AZURE_GZ[: len(AZURE_GZ) * 3 // 4]
#: the line the cut falls in: the one after the lines that decompress whole
CUT_LINE = zlib.decompressobj(31).decompress(CUT_GZ).count(b"\n") + 1
BAD_CRC_GZ = AZURE_GZ[:-8] + bytes([AZURE_GZ[-8] ^ 0xFF]) + AZURE_GZ[-7:]
PARQUET = parquet_bytes(good_parquet_table())

CASES: list[Case] = [
    # ------------------------------------------------------------------ compression
    trace_case("trace-gzip-truncated", "azure", "trace.csv.gz", CUT_GZ,
               [f"trace.csv.gz:{CUT_LINE}:", "gzip data ends early", "truncated"]),
    trace_case("trace-gzip-without-trailer", "azure", "trace.csv.gz", AZURE_GZ[:-8],
               ["trace.csv.gz:402:", "gzip data ends early"]),
    trace_case("trace-gzip-bad-crc", "azure", "trace.csv.gz", BAD_CRC_GZ,
               ["trace.csv.gz:402:", "gzip data is corrupt", "CRC check failed"]),
    trace_case("trace-plain-text-named-gz", "azure", "trace.csv.gz", AZURE,
               ["trace.csv.gz: not gzip-compressed", "rename it without .gz"]),
    trace_case("trace-gzip-truncated-jsonl", "mooncake", "trace.jsonl.gz",
               gzip.compress(mooncake_lines(300).encode(), mtime=0)[:-8],
               ["trace.jsonl.gz:301:", "gzip data ends early"]),
    stats_case("trace-stats-gzip-truncated", "azure", "trace.csv.gz", AZURE_GZ[:-8],
               ["trace.csv.gz:402:", "gzip data ends early"]),
    stats_case("trace-stats-plain-text-named-gz", "azure", "trace.csv.gz", AZURE,
               ["trace.csv.gz: not gzip-compressed"]),
    # ------------------------------------------------------------------ encoding
    trace_case("trace-bad-byte-line-5", "azure", "trace.csv", bad_byte_at(AZURE, 5),
               ["trace.csv:5: not UTF-8 text: byte 0xe9 at column 6"]),
    trace_case("trace-bad-byte-late-line", "azure", "trace.csv", bad_byte_at(AZURE, 350),
               ["trace.csv:350: not UTF-8 text: byte 0xe9"]),
    trace_case("trace-bad-byte-in-gzip", "azure", "trace.csv.gz",
               gzip.compress(bad_byte_at(AZURE, 300)), ["trace.csv.gz:300: not UTF-8 text"]),
    trace_case("trace-bad-byte-jsonl", "mooncake", "trace.jsonl",
               bad_byte_at(mooncake_lines(200), 150), ["trace.jsonl:150: not UTF-8 text"]),
    stats_case("trace-stats-bad-byte", "splitwise", "trace.csv", bad_byte_at(SPLITWISE, 7),
               ["trace.csv:7: not UTF-8 text"]),
    # ------------------------------------------------------------------ truncation
    trace_case("trace-csv-row-cut-in-half", "azure", "trace.csv",
               AZURE_HEADER + azure_rows(30) + "2000-01-01 00:00:30.0000000,2",
               ["trace.csv:32: expected at least 3 fields, found 2"]),
    trace_case("trace-jsonl-line-cut-mid-object", "mooncake", "trace.jsonl",
               mooncake_lines(30) + '{"timestamp": 15000, "input_len',
               ["trace.jsonl:31: not valid JSON", "the file ends inside this line"]),
    trace_case("trace-parquet-truncated", "parquet", "trace.parquet", PARQUET[: len(PARQUET) // 2],
               ["trace.parquet: not a readable Parquet file"], columns=PARQUET_COLUMNS),
    trace_case("trace-parquet-corrupt-row-group", "parquet", "trace.parquet",
               corrupt_second_row_group(PARQUET), ["trace.parquet:5:", "row group 1"],
               columns=PARQUET_COLUMNS),
    # ------------------------------------------------------------------ token counts
    trace_case("trace-count-2-pow-63", "azure", "trace.csv",
               with_line(AZURE, 5, "2000-01-01 00:00:03.0,9223372036854775808,10\n"),
               ["trace.csv:5: ContextTokens: token count '9223372036854775808' is out of range",
                "0 to 10,000,000"]),
    trace_case("trace-count-beyond-64-bit", "splitwise", "trace.csv",
               with_line(SPLITWISE, 9, "3.5,7," + "9" * 30 + "\n"),
               ["trace.csv:9: num_decode_tokens: token count", "out of range"]),
    trace_case("trace-count-above-bound", "burstgpt", "trace.csv",
               BURSTGPT_HEADER + "0,ChatGPT,100,10,110,API log\n1,ChatGPT,10000001,5,10000006,API log\n",
               ["trace.csv:3: Request tokens: token count '10000001' is out of range"]),
    trace_case("trace-count-negative", "azure", "trace.csv",
               with_line(AZURE, 4, "2000-01-01 00:00:02.0,-12,10\n"),
               ["trace.csv:4: ContextTokens: negative token count -12"]),
    trace_case("trace-count-fractional", "burstgpt", "trace.csv",
               BURSTGPT_HEADER + "0,ChatGPT,100,10,110,API log\n1,ChatGPT,100,1.5,101.5,API log\n",
               ["trace.csv:3: Response tokens: not an integer: '1.5'"]),
    trace_case("trace-count-nan", "splitwise", "trace.csv", with_line(SPLITWISE, 6, "2.0,nan,5\n"),
               ["trace.csv:6: num_prefill_tokens: not a number: 'nan'"]),
    trace_case("trace-count-inf", "csv", "trace.csv", "t,in,out\n0,10,5\n1000,12,inf\n",
               ["trace.csv:3: out: token count 'inf' is out of range"], columns=GENERIC_COLUMNS),
    trace_case("trace-count-not-a-number", "azure", "trace.csv",
               with_line(AZURE, 5, "2000-01-01 00:00:03.0,200,lots\n"),
               ["trace.csv:5: GeneratedTokens: not a number: 'lots'"]),
    trace_case("trace-count-json-overflow", "mooncake", "trace.jsonl",
               with_line(mooncake_lines(20), 12, mooncake_line(11, input_length="1e300")),
               ["trace.jsonl:12: input_length: token count '1e+300' is out of range"]),
    trace_case("trace-count-json-5000-digits", "mooncake", "trace.jsonl",
               with_line(mooncake_lines(20), 3, mooncake_line(2, output_length="9" * 5000)),
               ["trace.jsonl:3: a number of more than 4,300 digits"]),
    trace_case("trace-count-json-string", "mooncake", "trace.jsonl",
               with_line(mooncake_lines(20), 4, mooncake_line(3, output_length='"12"')),
               ["trace.jsonl:4: output_length: not a number: '12'"]),
    trace_case("trace-count-parquet-uint64", "parquet", "trace.parquet",
               parquet_bytes(pa.table({"t": [0.0, 1.0, 2.0],
                                       "p": pa.array([5, 6, 2**63], pa.uint64()), "o": [1, 2, 3]})),
               ["trace.parquet:3: p: token count '9223372036854775808' is out of range"],
               columns=PARQUET_COLUMNS),
    stats_case("trace-stats-count-overflow", "splitwise", "trace.csv",
               with_line(SPLITWISE, 8, "3.0,18446744073709551616,5\n"),
               ["trace.csv:8: num_prefill_tokens: token count", "out of range"]),
    lengths_case("trace-empirical-count-overflow",
                 "num_prefill_tokens,num_decode_tokens\n5,6\n7,99999999999999999999\n",
                 ["lengths.csv:3: num_decode_tokens: token count", "out of range"]),
    # ------------------------------------------------------------------ arrival times
    trace_case("trace-time-nan", "splitwise", "trace.csv", with_line(SPLITWISE, 7, "nan,10,5\n"),
               ["trace.csv:7: arrived_at: timestamp is not a number: 'nan'"]),
    trace_case("trace-time-inf", "csv", "trace.csv", "t,in,out\n0,10,5\ninf,12,6\n",
               ["trace.csv:3: t: timestamp 'inf' is out of range"], columns=GENERIC_COLUMNS),
    trace_case("trace-time-huge", "splitwise", "trace.csv", with_line(SPLITWISE, 5, "1e300,10,5\n"),
               ["trace.csv:5: arrived_at: timestamp '1e300' is out of range",
                "is the arrival unit right?"]),
    trace_case("trace-time-nanoseconds-read-as-ms", "csv", "trace.csv",
               "t,in,out\n1700000000000000000,10,5\n1700000000500000000,12,6\n",
               ["trace.csv:2: t: timestamp '1700000000000000000' is out of range"],
               columns=GENERIC_COLUMNS),
    trace_case("trace-time-json-nan", "mooncake", "trace.jsonl",
               with_line(mooncake_lines(10), 6, mooncake_line(5, timestamp="NaN")),
               ["trace.jsonl:6: timestamp: timestamp is not a number"]),
    trace_case("trace-time-bad-datetime", "azure", "trace.csv",
               with_line(AZURE, 9, "16/11/2023 18:15,200,10\n"),
               ["trace.csv:9: TIMESTAMP: bad timestamp '16/11/2023 18:15'"]),
    trace_case("trace-time-goes-back", "azure", "trace.csv",
               with_line(AZURE, 40, "2000-01-01 00:00:10.0000000,200,10\n"),
               ["trace.csv:40: timestamp goes back 27 s", "reorder_window_s"]),
    # ------------------------------------------------------------------ empty traces
    trace_case("trace-empty-csv", "azure", "trace.csv", "",
               ["trace.csv:1: empty file, no requests", "TIMESTAMP, ContextTokens, GeneratedTokens"]),
    trace_case("trace-header-only-csv", "azure", "trace.csv", AZURE_HEADER,
               ["trace.csv: no requests: the file has a header but no data rows"]),
    trace_case("trace-burstgpt-only-failed-rows", "burstgpt", "trace.csv",
               BURSTGPT_HEADER + "0,ChatGPT,100,0,100,API log\n",
               ["trace.csv: no requests: all 1 rows are failed requests"]),
    trace_case("trace-empty-jsonl", "mooncake", "trace.jsonl", "",
               ["trace.jsonl: no requests: the file has no JSON lines"]),
    trace_case("trace-blank-lines-jsonl", "mooncake", "trace.jsonl", "\n \n\n",
               ["trace.jsonl: no requests"]),
    trace_case("trace-empty-parquet", "parquet", "trace.parquet",
               parquet_bytes(good_parquet_table().slice(0, 0)),
               ["trace.parquet: no requests: the table has no rows"], columns=PARQUET_COLUMNS),
    stats_case("trace-stats-empty-jsonl", "mooncake", "trace.jsonl", "\n",
               ["trace.jsonl: no requests"]),
    lengths_case("trace-empirical-empty", "num_prefill_tokens,num_decode_tokens\n",
                 ["lengths.csv: no requests"]),
    # ------------------------------------------------------------------ shape (handled before)
    trace_case("trace-missing-column", "azure", "trace.csv",
               "TIMESTAMP,Context,GeneratedTokens\n" + azure_rows(5),
               ["trace.csv:1: header lacks column(s) ContextTokens"]),
    trace_case("trace-jsonl-missing-key", "mooncake", "trace.jsonl",
               mooncake_lines(5) + '{"timestamp": 9000, "input_length": 5}\n',
               ["trace.jsonl:6: missing key(s) output_length"]),
    trace_case("trace-jsonl-not-an-object", "mooncake", "trace.jsonl",
               mooncake_lines(5) + "[1, 2, 3]\n", ["trace.jsonl:6: expected a JSON object"]),
    Case("trace-missing-file", {"scenario.yaml": as_yaml(changed(light_scenario(), **{
        "workload.streams.0": {"kind": "trace", "format": "azure", "path": "nowhere.csv",
                               "request_class": "interactive"}}))},
        ["run", "scenario.yaml", "--quiet", "--out", "results/x"],
        ["workload.streams[0].path: trace file", "nowhere.csv does not exist"]),
    Case("trace-stats-missing-file", {}, ["traces", "stats", "nowhere.csv"],
         ["nowhere.csv: trace file not found"]),
]
