"""Trace readers: real public files (when present), every format, and file:line errors."""

from __future__ import annotations

import gzip
import json
import math
import zlib
from pathlib import Path

import numpy as np
import pytest

from chironsim.errors import ConfigError, TraceFormatError
from chironsim.workload import WorkloadConfig, build_workload, check_workload_files
from chironsim.workload.config import TraceColumns
from chironsim.workload.readers import ReadCounters, read_trace
from chironsim.workload.timeparse import DatetimeParser

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "traces"
REPO = Path(__file__).resolve().parents[1]


def shared_file(name: str) -> Path:
    path = SHARED / name
    if not path.is_file():
        pytest.skip(f"real trace {name} is not available in ../shared/traces")
    return path


def derived(name: str) -> dict:
    stats_path = shared_file("DERIVED_trace_stats.json")
    return {entry["name"]: entry for entry in json.loads(stats_path.read_text())}[name]


def replay(path: Path, fmt: str, seed: int = 0, **options: object) -> list:
    config = WorkloadConfig.model_validate(
        {"streams": [{"kind": "trace", "format": fmt, "path": str(path), **options}]}
    )
    return list(build_workload(config, np.random.SeedSequence(seed), path.parent))


# ------------------------------------------------------------------- real traces


@pytest.mark.parametrize(
    ("file", "fmt", "stats_name"),
    [
        ("azure_llm_2023_conv.csv", "azure", "azure2023_conv"),
        ("azure_llm_2023_code.csv", "azure", "azure2023_code"),
        ("mooncake_conversation_trace.jsonl", "mooncake", "mooncake_conversation_trace"),
        ("mooncake_synthetic_trace.jsonl", "mooncake", "mooncake_synthetic_trace"),
    ],
)
def test_real_trace_rows_span_and_lengths(file: str, fmt: str, stats_name: str) -> None:
    facts = derived(stats_name)
    requests = replay(shared_file(file), fmt)
    assert len(requests) == facts["rows"]
    assert requests[0].arrival == 0.0
    assert requests[-1].arrival == pytest.approx(facts["duration_s"], abs=0.1)
    prompts = np.array([r.prompt_tokens for r in requests])
    outputs = np.array([r.output_tokens for r in requests])
    assert prompts.mean() == pytest.approx(facts["in_mean"], abs=0.1)
    assert outputs.mean() == pytest.approx(facts["out_mean"], abs=0.1)
    assert prompts.max() == facts["in_max"] and outputs.max() == facts["out_max"]
    assert all(a.arrival <= b.arrival for a, b in zip(requests, requests[1:]))


def test_mooncake_prefix_hashes_cover_the_prompt() -> None:
    requests = replay(shared_file("mooncake_conversation_trace.jsonl"), "mooncake")
    blocks = [len(r.prefix_hashes) for r in requests]
    assert np.mean(blocks) == pytest.approx(derived("mooncake_conversation_trace")["blocks_per_req_mean"], abs=0.05)
    # 512-token blocks: each request has ceil(input / 512) of them
    assert all(n == math.ceil(r.prompt_tokens / 512) for n, r in zip(blocks, requests))


def test_vidur_length_table_reads_without_arrivals() -> None:
    path = shared_file("vidur_arxiv_summarization_lengths.csv")
    rows = list(read_trace(path, "splitwise", need_arrival=False))
    assert len(rows) == 28_257  # the data rows the shared README lists
    assert all(math.isnan(r.arrival) for r in rows[:10])
    with pytest.raises(TraceFormatError, match="arrived_at"):
        next(read_trace(path, "splitwise"))


# ------------------------------------------------------------------- every format


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_azure_datetime_with_and_without_offset(tmp_path: Path) -> None:
    path = write(tmp_path, "a.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\n"
                 "2024-05-10 23:59:59.5000000+00:00,10,2\n"
                 "2024-05-11 00:00:01.0000000+00:00,20,3\n"
                 "2024-05-11T02:00:01.25+02:00,30,4\n")
    requests = replay(path, "azure")
    assert [r.arrival for r in requests] == pytest.approx([0.0, 1.5, 1.75])
    parser = DatetimeParser()
    assert parser.seconds("1970-01-02 00:00:00") == 86_400.0
    assert parser.seconds("1970-01-01 00:00:01Z") == 1.0
    with pytest.raises(ValueError):
        parser.seconds("yesterday at noon")


def test_burstgpt_drops_and_counts_failed_requests(tmp_path: Path) -> None:
    path = write(tmp_path, "b.csv", "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
                 "5,ChatGPT,472,18,490,Conversation log\n"
                 "45,ChatGPT,1087,0,1087,Conversation log\n"
                 "118,GPT-4,417,276,693,API log\n")
    counters = ReadCounters()
    rows = list(read_trace(path, "burstgpt", counters=counters))
    assert [r.line for r in rows] == [2, 4]
    assert counters.rows == 3 and counters.dropped_failed == 1
    config = WorkloadConfig.model_validate({"streams": [{"kind": "trace", "format": "burstgpt", "path": "b.csv"}]})
    workload = build_workload(config, np.random.SeedSequence(0), tmp_path)
    assert [(r.arrival, r.prompt_tokens) for r in workload] == [(0.0, 472), (113.0, 417)]
    assert workload.stats[0].dropped_failed == 1 and workload.stats[0].emitted == 2


def test_splitwise_csv_and_units(tmp_path: Path) -> None:
    write(tmp_path, "s.csv", "arrived_at,num_prefill_tokens,num_decode_tokens\n0.0,374,44\n4.314579,396,109\n")
    assert [r.arrival for r in replay(tmp_path / "s.csv", "splitwise")] == [0.0, 4.314579]
    write(tmp_path, "g.csv", "id,t,in,out\nx,1000,5,6\ny,3500,7,8\n")
    for unit, scale in (("ms", 1e-3), ("us", 1e-6), ("s", 1.0)):
        columns = {"arrival": "t", "prompt_tokens": "in", "output_tokens": "out", "arrival_unit": unit}
        requests = replay(tmp_path / "g.csv", "csv", columns=columns)
        assert [r.arrival for r in requests] == pytest.approx([0.0, 2500 * scale])
        assert [r.output_tokens for r in requests] == [6, 8]


def test_gzip_and_parquet(tmp_path: Path) -> None:
    text = "arrived_at,num_prefill_tokens,num_decode_tokens\n1,10,20\n2,30,40\n"
    with gzip.open(tmp_path / "s.csv.gz", "wt") as out:
        out.write(text)
    assert [r.prompt_tokens for r in replay(tmp_path / "s.csv.gz", "splitwise")] == [10, 30]

    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"t": [0.5, 1.0, 2.0], "p": [5, 6, 7], "o": [1, 2, 3]})
    pq.write_table(table, tmp_path / "t.parquet")
    columns = {"arrival": "t", "prompt_tokens": "p", "output_tokens": "o"}
    requests = replay(tmp_path / "t.parquet", "parquet", columns=columns)
    assert [(r.arrival, r.prompt_tokens, r.output_tokens) for r in requests] == [
        (0.0, 5, 1), (0.5, 6, 2), (1.5, 7, 3)]
    pq.write_table(pa.table({"t": [0.5], "p": [-5], "o": [1]}), tmp_path / "bad.parquet")
    with pytest.raises(TraceFormatError, match=r"bad.parquet:1: p: negative"):
        replay(tmp_path / "bad.parquet", "parquet", columns=columns)


# ------------------------------------------------------------------- malformed files

AZURE_HEADER = "TIMESTAMP,ContextTokens,GeneratedTokens\n"
GOOD = "2023-11-16 18:15:46.6805900,374,44\n"


@pytest.mark.parametrize(
    ("text", "line", "problem"),
    [
        (AZURE_HEADER + GOOD + "2023-11-16 18:15:47.0,abc,44\n", 3, "ContextTokens: not a number"),
        (AZURE_HEADER + GOOD + "2023-11-16 18:15:47.0,12.5,44\n", 3, "ContextTokens: not an integer"),
        (AZURE_HEADER + GOOD + "2023-11-16 18:15:47.0,12,-3\n", 3, "GeneratedTokens: negative token count"),
        (AZURE_HEADER + GOOD + GOOD + "2023-11-16 18:15:47.0,12\n", 4, "expected at least 3 fields"),
        (AZURE_HEADER + GOOD + "16/11/2023 18:15,12,3\n", 3, "TIMESTAMP: bad timestamp"),
        (AZURE_HEADER + "2023-11-16 18:15:50.0,1,1\n" + GOOD, 3, "timestamp goes back 3.3"),
        ("TIMESTAMP,Context,GeneratedTokens\n" + GOOD, 1,
         "header lacks column(s) ContextTokens; a azure trace needs columns TIMESTAMP, ContextTokens, GeneratedTokens"),
        ("", 1, "empty file"),
    ],
)
def test_malformed_csv_lines_name_file_and_line(tmp_path: Path, text: str, line: int, problem: str) -> None:
    path = write(tmp_path, "bad.csv", text)
    with pytest.raises(TraceFormatError) as caught:
        replay(path, "azure")
    assert caught.value.line == line
    assert str(caught.value).startswith(f"{path}:{line}: ")
    assert problem in str(caught.value)


@pytest.mark.parametrize(
    ("line_text", "problem"),
    [
        ("{not json", "not valid JSON"),
        ('{"timestamp": 5, "input_length": 3}', "missing key(s) output_length"),
        ('{"timestamp": 5, "input_length": "3", "output_length": 1}', "input_length: not a number"),
        ('{"timestamp": 5, "input_length": 3, "output_length": -1}', "output_length: negative"),
        ('{"timestamp": 5, "input_length": 3, "output_length": 1, "hash_ids": ["a"]}', "hash_ids"),
        ('[1, 2, 3]', "expected a JSON object"),
    ],
)
def test_malformed_mooncake_lines(tmp_path: Path, line_text: str, problem: str) -> None:
    good = '{"timestamp": 0, "input_length": 3, "output_length": 1, "hash_ids": [0]}\n'
    path = write(tmp_path, "m.jsonl", good + "\n" + line_text + "\n")
    with pytest.raises(TraceFormatError) as caught:
        replay(path, "mooncake")
    assert str(caught.value).startswith(f"{path}:3: ") and problem in str(caught.value)


def test_out_of_order_lines_within_the_window_are_sorted(tmp_path: Path) -> None:
    path = write(tmp_path, "s.csv", "arrived_at,num_prefill_tokens,num_decode_tokens\n"
                 "10.0,1,1\n10.5,2,1\n10.2,3,1\n12.0,4,1\n11.9,5,1\n")
    requests = replay(path, "splitwise")
    assert [r.prompt_tokens for r in requests] == [1, 3, 2, 5, 4]
    with pytest.raises(TraceFormatError, match=r"s.csv:4: timestamp goes back 0.3"):
        replay(path, "splitwise", reorder_window_s=0.0)
    # the first line is not always the earliest: times are relative to the minimum
    write(tmp_path, "t.csv", "arrived_at,num_prefill_tokens,num_decode_tokens\n5.5,1,1\n5.0,2,1\n")
    assert [r.arrival for r in replay(tmp_path / "t.csv", "splitwise")] == [0.0, 0.5]


def test_reading_is_lazy_a_late_bad_line_only_fails_when_reached(tmp_path: Path) -> None:
    lines = [f"{i * 0.01:.2f},100,10\n" for i in range(60_000)]
    lines[50_000] = "500.00,oops,10\n"
    write(tmp_path, "big.csv", "arrived_at,num_prefill_tokens,num_decode_tokens\n" + "".join(lines))
    config = WorkloadConfig.model_validate({"streams": [{"kind": "trace", "format": "splitwise", "path": "big.csv"}]})
    workload = build_workload(config, np.random.SeedSequence(0), tmp_path)
    first = [next(workload) for _ in range(100)]
    assert first[-1].arrival == pytest.approx(0.99)
    assert workload.stats[0].rows < 1_000  # 100 requests plus the 1 s reorder window ahead
    workload.close()
    with pytest.raises(TraceFormatError, match=r"big.csv:50002: num_prefill_tokens: not a number"):
        list(build_workload(config, np.random.SeedSequence(0), tmp_path))


def test_missing_file_is_reported_at_first_use_or_by_the_check(tmp_path: Path) -> None:
    config = WorkloadConfig.model_validate({"streams": [
        {"kind": "synthetic", "arrival": {"kind": "poisson", "rate": 1}, "duration_s": 5,
         "prompt_tokens": {"kind": "fixed", "value": 5}, "output_tokens": {"kind": "fixed", "value": 5}},
        {"kind": "trace", "format": "azure", "path": "nowhere.csv"},
    ]})
    build_workload(config, np.random.SeedSequence(0), tmp_path)  # building reads nothing
    with pytest.raises(ConfigError, match=r"workload\.streams\[1\]\.path: trace file .*nowhere.csv does not exist"):
        check_workload_files(config, tmp_path)


def test_check_catches_bad_headers_and_empirical_files(tmp_path: Path) -> None:
    write(tmp_path, "bad.csv", "when,in,out\n1,2,3\n")
    config = WorkloadConfig.model_validate({"streams": [{"kind": "trace", "format": "azure", "path": "bad.csv"}]})
    with pytest.raises(TraceFormatError, match="bad.csv:1: header lacks column"):
        check_workload_files(config, tmp_path)
    config = WorkloadConfig.model_validate({"streams": [{
        "kind": "batch", "num_requests": 3, "deadline_s": 60,
        "prompt_tokens": {"kind": "fixed", "value": 5},
        "output_tokens": {"kind": "empirical", "path": "lengths.csv", "format": "splitwise"}}]})
    with pytest.raises(ConfigError, match=r"workload\.streams\[0\]\.output_tokens\.path"):
        check_workload_files(config, tmp_path)
    write(tmp_path, "lengths.csv", "num_prefill_tokens,num_decode_tokens\n5,6\n")
    check_workload_files(config, tmp_path)  # lengths need no arrival column


def test_shipped_samples_replay_without_shared_traces() -> None:
    azure = replay(REPO / "traces" / "azure_conv_sample.csv", "azure")
    mooncake = replay(REPO / "traces" / "mooncake_conv_sample.jsonl", "mooncake")
    assert len(azure) == 4000 and len(mooncake) == 600
    assert all(r.prefix_hashes and r.prefix_hashes[0] == 0 for r in mooncake)
    for name in ("azure_conv_sample.csv", "mooncake_conv_sample.jsonl"):
        assert (REPO / "traces" / name).stat().st_size < 200_000


def test_columns_model_needs_arrival_only_for_replay(tmp_path: Path) -> None:
    write(tmp_path, "l.csv", "p,o\n3,4\n")
    columns = TraceColumns(prompt_tokens="p", output_tokens="o")
    assert [(r.prompt_tokens, r.output_tokens) for r in read_trace(tmp_path / "l.csv", "csv", columns, need_arrival=False)] == [(3, 4)]


# ------------------------------------------------------------------- read failures (issue 8)

SPLITWISE_HEADER = "arrived_at,num_prefill_tokens,num_decode_tokens\n"


def splitwise_rows(count: int, start: int = 0) -> str:
    return "".join(f"{i * 0.5:.1f},{100 + i},{10 + i}\n" for i in range(start, start + count))


def check_fails(path: Path, fmt: str, line: int | None, *problems: str, **options: object) -> str:
    """Replaying ``path`` raises TraceFormatError at ``path:line`` (or ``path:`` alone)."""
    with pytest.raises(TraceFormatError) as caught:
        replay(path, fmt, **options)
    message = str(caught.value)
    assert caught.value.line == line, message
    assert message.startswith(f"{path}:{line}: " if line is not None else f"{path}: "), message
    for problem in problems:
        assert problem in message, message
    return message


def test_truncated_and_fake_gzip_traces_are_located(tmp_path: Path) -> None:
    text = (SPLITWISE_HEADER + splitwise_rows(2000)).encode()
    packed = gzip.compress(text, mtime=0)
    cut = packed[: len(packed) // 2]
    (tmp_path / "cut.csv.gz").write_bytes(cut)
    complete = zlib.decompressobj(31).decompress(cut).count(b"\n")
    check_fails(tmp_path / "cut.csv.gz", "splitwise", complete + 1, "gzip data ends early", "truncated")
    (tmp_path / "notrailer.csv.gz").write_bytes(packed[:-8])
    check_fails(tmp_path / "notrailer.csv.gz", "splitwise", 2002, "gzip data ends early")
    (tmp_path / "plain.csv.gz").write_bytes(text)
    check_fails(tmp_path / "plain.csv.gz", "splitwise", None, "not gzip-compressed", "rename it")
    bad_crc = bytearray(packed)
    bad_crc[-6] ^= 0xFF  # the stored CRC-32
    (tmp_path / "crc.csv.gz").write_bytes(bytes(bad_crc))
    check_fails(tmp_path / "crc.csv.gz", "splitwise", 2002, "gzip data is corrupt", "CRC")
    moon = gzip.compress(b"".join(
        b'{"timestamp": %d, "input_length": 5, "output_length": 1}\n' % i for i in range(3000)))
    (tmp_path / "m.jsonl.gz").write_bytes(moon[: len(moon) // 2])
    complete = zlib.decompressobj(31).decompress(moon[: len(moon) // 2]).count(b"\n")
    check_fails(tmp_path / "m.jsonl.gz", "mooncake", complete + 1, "gzip data ends early")


def test_plain_text_named_gz_fails_at_the_config_check(tmp_path: Path) -> None:
    write(tmp_path, "t.csv.gz", SPLITWISE_HEADER + splitwise_rows(3))
    config = WorkloadConfig.model_validate(
        {"streams": [{"kind": "trace", "format": "splitwise", "path": "t.csv.gz"}]})
    with pytest.raises(TraceFormatError, match=r"t\.csv\.gz: not gzip-compressed"):
        check_workload_files(config, tmp_path)


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("bad_line", [5, 1500])
def test_a_bad_byte_is_reported_on_its_own_line(tmp_path: Path, bad_line: int, compress: bool) -> None:
    """Text is decoded in 8 KB chunks: the error used to name the line the chunk began at."""
    lines = (SPLITWISE_HEADER + splitwise_rows(3000)).encode().split(b"\n")
    lines[bad_line - 1] = lines[bad_line - 1][:4] + b"\xe9" + lines[bad_line - 1][4:]
    data = b"\n".join(lines)
    name = "latin1.csv.gz" if compress else "latin1.csv"
    (tmp_path / name).write_bytes(gzip.compress(data) if compress else data)
    check_fails(tmp_path / name, "splitwise", bad_line, "not UTF-8 text: byte 0xe9 at column 5")


def test_a_bad_byte_in_json_lines_is_located(tmp_path: Path) -> None:
    good = b'{"timestamp": 0, "input_length": 3, "output_length": 1}\n'
    (tmp_path / "m.jsonl").write_bytes(good * 400 + b'{"timestamp": 1, "input_length": 3, "x": "\xff"}\n')
    check_fails(tmp_path / "m.jsonl", "mooncake", 401, "not UTF-8 text: byte 0xff")


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("9223372036854775808", "out of range"),  # 2^63: used to wrap to -2^63 downstream
        ("9" * 30, "out of range"),
        ("9" * 5000, "out of range"),  # past Python's int-from-text digit limit
        ("10000001", "from 0 to 10,000,000"),
        ("1e400", "out of range"),
        ("inf", "out of range"),
        ("nan", "not a number"),
        ("-1", "negative token count"),
        ("-9223372036854775809", "negative token count"),
        ("1.5", "not an integer"),
        ("", "not a number"),
        ("twelve", "not a number"),
    ],
)
def test_csv_token_counts_must_be_whole_numbers_in_range(tmp_path: Path, value: str, problem: str) -> None:
    path = write(tmp_path, "s.csv", SPLITWISE_HEADER + splitwise_rows(3) + f"2.0,{value},5\n")
    message = check_fails(path, "splitwise", 5, "num_prefill_tokens: ", problem)
    assert len(message) < 300  # a 5,000-digit value is shown cut short


def test_token_count_bounds_are_inclusive(tmp_path: Path) -> None:
    path = write(tmp_path, "s.csv", SPLITWISE_HEADER + "0,10000000,0\n1,1e7,0.0\n")
    assert [(r.prompt_tokens, r.output_tokens) for r in read_trace(path, "splitwise")] == [
        (10_000_000, 0), (10_000_000, 0)]


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("9223372036854775808", "out of range"),
        ("1e300", "out of range"),
        ("Infinity", "out of range"),
        ("NaN", "not a number"),
        ("-1", "negative token count"),
        ("1.5", "not an integer"),
        ('"12"', "not a number"),
        ("true", "not a number"),
        ("9" * 5000, "a number of more than 4,300 digits"),
    ],
)
def test_json_token_counts_must_be_whole_numbers_in_range(tmp_path: Path, value: str, problem: str) -> None:
    good = '{"timestamp": 0, "input_length": 3, "output_length": 1}\n'
    path = write(tmp_path, "m.jsonl", good + f'{{"timestamp": 5, "input_length": {value}, "output_length": 1}}\n')
    check_fails(path, "mooncake", 2, problem)


@pytest.mark.parametrize(
    ("fmt", "text", "problem"),
    [
        ("splitwise", SPLITWISE_HEADER + "0,1,1\nnan,1,1\n", "timestamp is not a number"),
        ("splitwise", SPLITWISE_HEADER + "0,1,1\ninf,1,1\n", "out of range"),
        ("splitwise", SPLITWISE_HEADER + "0,1,1\n1e300,1,1\n", "is the arrival unit right?"),
        ("splitwise", SPLITWISE_HEADER + "0,1,1\n1700000000000,1,1\n", "out of range"),  # ms as s
        ("mooncake", '{"timestamp": 0, "input_length": 1, "output_length": 1}\n'
                     '{"timestamp": NaN, "input_length": 1, "output_length": 1}\n', "not a number"),
        ("mooncake", '{"timestamp": 0, "input_length": 1, "output_length": 1}\n'
                     '{"timestamp": ' + "9" * 400 + ', "input_length": 1, "output_length": 1}\n',
         "out of range"),
    ],
)
def test_arrival_times_must_be_finite_and_in_range(tmp_path: Path, fmt: str, text: str, problem: str) -> None:
    path = write(tmp_path, "t.jsonl" if fmt == "mooncake" else "t.csv", text)
    check_fails(path, fmt, 2 if fmt == "mooncake" else 3, problem)


def test_cut_off_lines_are_errors(tmp_path: Path) -> None:
    path = write(tmp_path, "s.csv", SPLITWISE_HEADER + splitwise_rows(3) + "2.0,10")
    check_fails(path, "splitwise", 5, "expected at least 3 fields, found 2")
    good = '{"timestamp": 0, "input_length": 3, "output_length": 1}\n'
    path = write(tmp_path, "m.jsonl", good * 3 + '{"timestamp": 9, "input_len')
    check_fails(path, "mooncake", 4, "not valid JSON", "the file ends inside this line")


def test_a_json_file_without_newlines_is_not_read_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from chironsim.workload import readers

    monkeypatch.setattr(readers, "MAX_JSON_LINE_CHARS", 64)
    path = write(tmp_path, "m.jsonl", '{"timestamp": 0, "input_length": 3, "output_length": 1}\n' + "x" * 200)
    check_fails(path, "mooncake", 2, "line longer than 64 characters")


EMPTY_TRACES = [
    ("splitwise", "header.csv", SPLITWISE_HEADER, "no requests: the file has a header but no data rows"),
    ("splitwise", "header_blank.csv", SPLITWISE_HEADER + "\n\n", "no requests"),
    ("burstgpt", "failed.csv", "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
     "1,ChatGPT,10,0,10,API log\n2,ChatGPT,20,0,20,API log\n",
     "no requests: all 2 rows are failed requests"),
    ("mooncake", "empty.jsonl", "", "no requests: the file has no JSON lines"),
    ("mooncake", "blank.jsonl", "\n  \n\n", "no requests: the file has no JSON lines"),
]


@pytest.mark.parametrize(("fmt", "name", "text", "problem"), EMPTY_TRACES)
def test_a_trace_without_requests_is_an_error_in_every_format(
    tmp_path: Path, fmt: str, name: str, text: str, problem: str
) -> None:
    path = write(tmp_path, name, text)
    check_fails(path, fmt, None, problem)
    config = WorkloadConfig.model_validate({"streams": [{"kind": "trace", "format": fmt, "path": name}]})
    with pytest.raises(TraceFormatError, match=problem):
        check_workload_files(config, tmp_path)  # caught before any simulation


def test_parquet_failures_are_located(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = {"arrival": "t", "prompt_tokens": "p", "output_tokens": "o"}
    table = pa.table({"t": [0.5 * i for i in range(12)], "p": list(range(100, 112)),
                      "o": list(range(5, 17))})
    pq.write_table(table, tmp_path / "good.parquet", row_group_size=4)
    data = (tmp_path / "good.parquet").read_bytes()
    (tmp_path / "cut.parquet").write_bytes(data[: len(data) // 2])
    check_fails(tmp_path / "cut.parquet", "parquet", None, "not a readable Parquet file", columns=columns)
    # wipe the second row group's pages: its first row (5) is named
    chunk = pq.ParquetFile(tmp_path / "good.parquet").metadata.row_group(1).column(1)
    broken = bytearray(data)
    start = chunk.data_page_offset
    broken[start:start + chunk.total_compressed_size] = b"\xff" * chunk.total_compressed_size
    (tmp_path / "page.parquet").write_bytes(bytes(broken))
    check_fails(tmp_path / "page.parquet", "parquet", 5, "row group 1", columns=columns)
    pq.write_table(table.slice(0, 0), tmp_path / "empty.parquet")
    check_fails(tmp_path / "empty.parquet", "parquet", None, "no requests: the table has no rows",
                columns=columns)
    pq.write_table(pa.table({"t": [0.0, 1.0], "p": pa.array([1, 2**63], pa.uint64()), "o": [1, 1]}),
                   tmp_path / "big.parquet")
    check_fails(tmp_path / "big.parquet", "parquet", 2, "p: token count '9223372036854775808' is out of range",
                columns=columns)
    pq.write_table(pa.table({"t": [0.0, math.inf], "p": [1, 2], "o": [1, 1]}), tmp_path / "inf.parquet")
    check_fails(tmp_path / "inf.parquet", "parquet", 2, "t: timestamp 'inf' is out of range", columns=columns)


def test_empirical_length_tables_are_checked_like_traces(tmp_path: Path) -> None:
    write(tmp_path, "lengths.csv", "num_prefill_tokens,num_decode_tokens\n5,6\n7,99999999999\n")
    config = WorkloadConfig.model_validate({"streams": [{
        "kind": "batch", "num_requests": 3, "deadline_s": 60,
        "prompt_tokens": {"kind": "fixed", "value": 5},
        "output_tokens": {"kind": "empirical", "path": "lengths.csv", "format": "splitwise"}}]})
    check_workload_files(config, tmp_path)  # the first row is fine
    with pytest.raises(TraceFormatError, match=r"lengths\.csv:3: num_decode_tokens: token count .* out of range"):
        list(build_workload(config, np.random.SeedSequence(0), tmp_path))
    write(tmp_path, "lengths.csv", "num_prefill_tokens,num_decode_tokens\n")
    with pytest.raises(TraceFormatError, match=r"lengths\.csv: no requests"):
        check_workload_files(config, tmp_path)


def test_naive_parquet_timestamps_do_not_depend_on_the_local_time_zone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Across a daylight-saving change, local-time conversion would insert an hour."""
    import datetime as dt
    import time

    import pyarrow as pa
    import pyarrow.parquet as pq

    stamps = [dt.datetime(2023, 3, 12, 1, 30), dt.datetime(2023, 3, 12, 3, 30)]  # US DST starts at 2:00
    pq.write_table(pa.table({"t": pa.array(stamps, pa.timestamp("us")), "p": [5, 6], "o": [1, 2]}),
                   tmp_path / "t.parquet")
    columns = {"arrival": "t", "prompt_tokens": "p", "output_tokens": "o"}
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        assert [r.arrival for r in replay(tmp_path / "t.parquet", "parquet", columns=columns)] == [0.0, 7200.0]
    finally:
        monkeypatch.undo()
        time.tzset()
