"""Trace readers: real public files (when present), every format, and file:line errors."""

from __future__ import annotations

import gzip
import json
import math
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
