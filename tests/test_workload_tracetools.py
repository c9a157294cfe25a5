"""trace_stats against the published facts; download_trace without a network; the shipped fits."""

from __future__ import annotations

import io
import json
import math
import urllib.error
from pathlib import Path
from typing import get_args

import pytest
import yaml

from chironsim.errors import ChironError, TraceFormatError, UnknownNameError
from chironsim.workload.config import SyntheticStream, TraceFormat
from chironsim.workload.tracetools import download_trace, known_traces, load_registry, trace_stats

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "traces"
TRACES = Path(__file__).resolve().parents[1] / "traces"


@pytest.mark.parametrize(
    ("file", "fmt", "name"),
    [
        ("azure_llm_2023_conv.csv", "azure", "azure2023_conv"),
        ("azure_llm_2023_code.csv", "azure", "azure2023_code"),
        ("mooncake_synthetic_trace.jsonl", "mooncake", "mooncake_synthetic_trace"),
    ],
)
def test_trace_stats_match_the_derived_facts(file: str, fmt: str, name: str) -> None:
    if not (SHARED / file).is_file():
        pytest.skip(f"real trace {file} is not available in ../shared/traces")
    facts = {e["name"]: e for e in json.loads((SHARED / "DERIVED_trace_stats.json").read_text())}[name]
    stats = trace_stats(SHARED / file, fmt)
    assert stats["rows"] == facts["rows"]
    assert stats["duration_s"] == pytest.approx(facts["duration_s"], abs=0.1)
    assert stats["rate_rps"] == pytest.approx(facts["rate_rps"], abs=0.001)
    assert stats["ia_cv"] == pytest.approx(facts["ia_cv"], abs=0.002)
    for ours, theirs in (("prompt", "in"), ("output", "out")):
        for stat in ("mean", "p50", "p90", "p99", "max"):
            assert stats[f"{ours}_{stat}"] == pytest.approx(facts[f"{theirs}_{stat}"], abs=0.1)


def test_trace_stats_on_a_small_file(tmp_path: Path) -> None:
    path = tmp_path / "b.csv"
    path.write_text("Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
                    "0,ChatGPT,10,5,15,API log\n1,ChatGPT,20,0,20,API log\n"
                    "1,ChatGPT,30,6,36,API log\n4,GPT-4,40,7,47,API log\n")
    stats = trace_stats(path, "burstgpt")
    assert (stats["rows"], stats["dropped_failed"], stats["duration_s"]) == (3, 1, 4.0)
    assert stats["rate_rps"] == 0.75 and stats["prompt_max"] == 40 and stats["output_p50"] == 6
    # gaps 1 s and 3 s: std (ddof 1) √2 over mean 2
    assert stats["ia_cv"] == pytest.approx(math.sqrt(2.0) / 2.0)
    assert stats["zero_ia_frac"] == 0.0
    (tmp_path / "empty.csv").write_text("arrived_at,num_prefill_tokens,num_decode_tokens\n")
    with pytest.raises(ChironError, match="no requests"):
        trace_stats(tmp_path / "empty.csv", "splitwise")


def test_trace_stats_reports_unreadable_files_with_their_line(tmp_path: Path) -> None:
    import gzip
    import zlib

    text = "arrived_at,num_prefill_tokens,num_decode_tokens\n" + "".join(
        f"{i},{100 + i},{1 + i % 7}\n" for i in range(3000))
    packed = gzip.compress(text.encode())[:6000]
    (tmp_path / "cut.csv.gz").write_bytes(packed)
    line = zlib.decompressobj(31).decompress(packed).count(b"\n") + 1
    with pytest.raises(TraceFormatError, match=rf"cut\.csv\.gz:{line}: the gzip data ends early"):
        trace_stats(tmp_path / "cut.csv.gz", "splitwise")
    (tmp_path / "big.csv").write_text(text + "3000,18446744073709551616,1\n")
    with pytest.raises(TraceFormatError, match=r"big\.csv:3002: num_prefill_tokens: token count .* out of range"):
        trace_stats(tmp_path / "big.csv", "splitwise")
    (tmp_path / "blank.jsonl").write_text("\n\n")
    with pytest.raises(TraceFormatError, match=r"blank\.jsonl: no requests"):
        trace_stats(tmp_path / "blank.jsonl", "mooncake")


def test_shipped_sample_reproduces_its_fit() -> None:
    fit = yaml.safe_load((TRACES / "azure_conv_fit.yaml").read_text())
    stream = SyntheticStream.model_validate(fit["stream"])
    stats = trace_stats(TRACES / "azure_conv_sample.csv", "azure")
    rows = stats["rows"]
    assert stats["rate_rps"] == pytest.approx(stream.arrival.rate, rel=4 / math.sqrt(rows))
    assert stats["ia_cv"] == pytest.approx(stream.arrival.cv, rel=0.1)
    assert stats["prompt_p50"] == pytest.approx(stream.prompt_tokens.median, rel=0.1)
    assert stats["output_max"] <= stream.max_output_tokens
    SyntheticStream.model_validate(yaml.safe_load((TRACES / "mooncake_conv_fit.yaml").read_text())["stream"])


def test_registry_entries_are_complete() -> None:
    registry = known_traces()
    assert {"azure_2023_conv", "azure_2024_conv_1week", "burstgpt_1", "mooncake_conversation"} <= set(registry)
    for name, entry in registry.items():
        assert entry["url"].startswith("https://"), name
        assert entry["format"] in get_args(TraceFormat), name
        assert entry["licence"] and entry["source"].startswith("https://"), name


def test_download_unknown_name() -> None:
    with pytest.raises(UnknownNameError, match="unknown trace 'azure_2023_convo'; did you mean azure_2023_conv"):
        download_trace("azure_2023_convo", "unused")


def test_download_failure_leaves_nothing(tmp_path: Path) -> None:
    def offline(url: str):
        raise urllib.error.URLError("no network")

    with pytest.raises(ChironError, match=r"could not download trace 'azure_2023_conv' from https://.*no network"):
        download_trace("azure_2023_conv", tmp_path, opener=offline)
    assert list(tmp_path.iterdir()) == []


def test_download_interrupted_midway_leaves_no_partial_file(tmp_path: Path) -> None:
    class Broken(io.BytesIO):
        def read(self, size: int = -1) -> bytes:
            raise ConnectionResetError("connection reset")

    with pytest.raises(ChironError, match="connection reset"):
        download_trace("mooncake_synthetic", tmp_path, opener=lambda url: Broken())
    assert list(tmp_path.iterdir()) == []


def test_download_writes_atomically_and_reuses_existing(tmp_path: Path) -> None:
    body = b'{"timestamp": 0, "input_length": 1, "output_length": 1, "hash_ids": [0]}\n'
    seen: list[str] = []

    def fake(url: str) -> io.BytesIO:
        seen.append(url)
        return io.BytesIO(body)

    path = download_trace("mooncake_synthetic", tmp_path / "dl", opener=fake)
    assert path == tmp_path / "dl" / "synthetic_trace.jsonl" and path.read_bytes() == body
    assert [p.name for p in (tmp_path / "dl").iterdir()] == ["synthetic_trace.jsonl"]
    assert seen == [load_registry()["mooncake_synthetic"]["url"]]
    assert download_trace("mooncake_synthetic", tmp_path / "dl", opener=fake) == path
    assert len(seen) == 1
