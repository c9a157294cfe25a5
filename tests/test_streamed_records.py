"""Runs with an output folder stream their request records to it (bounded memory): every table
must equal the in-memory run's, the files too, and a killed run must leave nothing behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from chironsim.experiments.result import Result, load_result
from chironsim.experiments.runner import run
from chironsim.metrics import exact
from chironsim.metrics.columns import RequestColumns
from chironsim.metrics.records import RequestRecord
from chironsim.metrics.store import TABLES
from chironsim.metrics.summary import summarize, summarize_batches

ROOT = Path(__file__).resolve().parents[1]


def _scenario(duration: float = 60.0) -> dict:
    """Two classes, rejections and unfinished requests at the horizon."""
    return {
        "name": "streamed", "seed": 3, "duration_s": duration, "drain_s": 5.0,
        "classes": {"interactive": {"priority": 0, "slo": {"ttft": 1.0, "tpot": 0.05}},
                    "batch": {"priority": 1, "slo": {"e2e": 30.0}}},
        "workload": {"streams": [
            {"kind": "synthetic", "request_class": "interactive",
             "arrival": {"kind": "poisson", "rate": 12.0}, "duration_s": duration,
             "prompt_tokens": {"kind": "lognormal", "median": 600.0, "sigma": 1.0},
             "output_tokens": {"kind": "lognormal", "median": 120.0, "sigma": 0.9},
             "max_prompt_tokens": 4096, "max_output_tokens": 600},
            {"kind": "synthetic", "request_class": "batch",
             "arrival": {"kind": "poisson", "rate": 3.0}, "duration_s": duration,
             "prompt_tokens": {"kind": "lognormal", "median": 1500.0, "sigma": 0.5},
             "output_tokens": {"kind": "lognormal", "median": 300.0, "sigma": 0.5},
             "max_prompt_tokens": 8192, "max_output_tokens": 1000}]},
        "cluster": {"model": "llama-3-8b", "gpu": "h100-sxm",
                    "pools": {"default": {"instances": 2, "max_queue": 40}}},
        "policy": {"kind": "static", "router": {"kind": "least_outstanding"}},
    }


@pytest.fixture(scope="module")
def in_memory() -> Result:
    return run(_scenario(), base_dir=ROOT)


@pytest.mark.parametrize("spill_rows", [1, 7, None])
def test_streamed_tables_equal_in_memory(tmp_path, in_memory, spill_rows):
    streamed = run(_scenario(), base_dir=ROOT, out=tmp_path / "s", spill_rows=spill_rows)
    assert set(in_memory.requests["status"].astype(str)) >= {"finished", "unfinished"}
    in_memory.save(tmp_path / "m")
    for name in TABLES:
        pd.testing.assert_frame_equal(getattr(streamed, name), getattr(in_memory, name),
                                      check_exact=True)
        assert ((tmp_path / "s" / f"{name}.parquet").read_bytes()
                == (tmp_path / "m" / f"{name}.parquet").read_bytes()), name
    assert not [p for p in (tmp_path / "s").iterdir() if p.name.startswith(".")]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    loaded = load_result(tmp_path / "s")
    pd.testing.assert_frame_equal(loaded.requests, in_memory.requests)


def test_streamed_csv_equals_saved_csv(tmp_path, in_memory):
    run(_scenario(), base_dir=ROOT, out=tmp_path / "s", fmt="csv", spill_rows=5)
    in_memory.save(tmp_path / "m", fmt="csv")
    for name in TABLES:
        assert ((tmp_path / "s" / f"{name}.csv").read_bytes()
                == (tmp_path / "m" / f"{name}.csv").read_bytes()), name


def test_buffer_never_holds_more_than_a_run(tmp_path, monkeypatch):
    most = []
    original = RequestColumns.append

    def append(self, record):
        original(self, record)
        most.append(self.buffered)

    monkeypatch.setattr(RequestColumns, "append", append)
    result = run(_scenario(30.0), base_dir=ROOT, out=tmp_path / "s", spill_rows=16)
    assert len(result.requests) > 100 and max(most) < 16


def test_merge_of_disordered_runs_small_blocks(tmp_path):
    rng = np.random.default_rng(0)
    n = 3000
    finish = np.arange(n) + rng.integers(0, 400, n)  # finish order: arrival plus a delay
    finish[rng.choice(n, 5, replace=False)] += 10_000  # a few very late ones
    order = np.argsort(finish, kind="stable")
    cols = RequestColumns()
    cols.spill_to(tmp_path / ".spill", run_rows=97, block_rows=13)
    for i in order.tolist():
        cols.append(RequestRecord(i, "c" if i % 3 else "d", float(i), 1, 2, 2, "finished", 0.0,
                                  1.0, 0.5, float("nan") if i % 7 == 0 else 0.1, 0.1, 1.0,
                                  float("nan"), 0, 0, 0, f"i{i % 4}", bool(i % 2), 0.2))
    cols.sort_by_id()
    assert cols.buffered == 0 and len(cols) == n
    # one closed file per run: no writer holds the metadata of every row group written
    assert len(list((tmp_path / ".spill").glob("run-*.parquet"))) == -(-n // 97)
    ids = np.concatenate([b["request_id"] for b in cols.sorted_batches(["request_id"])])
    assert (ids == np.arange(n)).all()
    table = cols.table()
    assert (table["request_id"].to_numpy() == np.arange(n)).all()
    assert [r.request_id for r in cols][:5] == [0, 1, 2, 3, 4]
    assert cols.classes() == {"c", "d"}


def test_killed_run_leaves_no_folder(tmp_path):
    out = tmp_path / "result"
    code = (f"from chironsim.experiments.runner import run\n"
            f"import tests.test_streamed_records as t\n"
            f"run(t._scenario(3600.0), out={str(out)!r}, spill_rows=10)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        deadline = time.monotonic() + 120
        spill = []
        while time.monotonic() < deadline and not spill:
            spill = list(tmp_path.glob(".result.tmp-*/.requests.spill/run-*.parquet"))
            time.sleep(0.2)
        assert spill, "the run never started spilling"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not out.exists()
    # the next writer in that folder removes the dead run's temporary
    run(_scenario(5.0), base_dir=ROOT, out=tmp_path / "other")
    assert [p.name for p in tmp_path.iterdir()] == ["other"]


def test_failed_run_removes_its_temporary(tmp_path):
    def boom(now, _estimate):
        if now > 10:
            raise RuntimeError("stop")

    with pytest.raises(RuntimeError):
        run(_scenario(), base_dir=ROOT, out=tmp_path / "r", progress=boom, spill_rows=3)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("n", [1, 2, 7, 8, 9, 127, 128, 129, 1000, 65_537, 300_001])
def test_exact_mean_and_percentiles(n):
    rng = np.random.default_rng(n)
    values = rng.lognormal(0.0, 2.0, n)
    if n > 100:
        values[: n // 3] = 0.25  # many ties
        rng.shuffle(values)
    chunks = np.array_split(values, max(1, n // 977))
    total = exact.PairwiseSum(n, leaf=256)
    for chunk in chunks:
        total.feed(chunk)
    assert total.mean() == float(values.mean())
    for q in [(50, 90, 99), 99.9, 50, 99, 0, 100]:
        stats = exact.OrderStatistics(lambda k, q=q: exact.percentile_ranks(k, q))
        done = False
        while not done:
            for chunk in chunks:
                stats.feed(chunk)
            done = stats.end_pass()
        got = exact.percentile(n, q, stats.values.__getitem__)
        want = np.percentile(values, q)
        assert np.array_equal(got, want) and type(got) is type(want)


def test_summarize_batches_equals_summarize(in_memory):
    req = in_memory.requests
    prices = {g: 2.5 for g in in_memory.instances["gpu"].astype(str)}
    classes = {name: spec for name, spec in
               run.__globals__["parse_config"](_scenario(), "<t>", ROOT).classes.items()}
    want = summarize(req, in_memory.instances, classes, 60.0, prices)
    for rows in (1, 13, len(req)):
        def batches(columns, rows=rows):
            for start in range(0, len(req), rows):
                part = req.iloc[start:start + rows]
                yield {c: part[c].astype(str).to_numpy(dtype=object)
                       if c in ("request_class", "status") else part[c].to_numpy() for c in columns}
        got = summarize_batches(batches, in_memory.instances, classes, 60.0, prices)
        pd.testing.assert_frame_equal(got, want, check_exact=True)


def test_row_groups_written_as_to_parquet_writes_them(tmp_path, in_memory):
    """The streamed requests file has to_parquet's row groups (pyarrow's 2**20 rows by
    default; 7 here, to cross several group boundaries)."""
    from chironsim.metrics.store import write_requests_stream

    req = in_memory.requests
    req.to_parquet(tmp_path / "whole.parquet", engine="pyarrow", index=False, row_group_size=7)

    def batches():
        for start in range(0, len(req), 5):
            part = req.iloc[start:start + 5]
            yield {c: part[c].astype(str).to_numpy(dtype=object)
                   if c in ("request_class", "status", "instances") else part[c].to_numpy()
                   for c in req.columns}

    rows = write_requests_stream(batches(), set(req["request_class"].astype(str)),
                                 tmp_path / "streamed.parquet", group_rows=7)
    assert rows == len(req)
    assert (tmp_path / "streamed.parquet").read_bytes() == (tmp_path / "whole.parquet").read_bytes()


def test_failed_run_removes_the_folders_it_made(tmp_path):
    def boom(now, _estimate):
        raise RuntimeError("stop")

    with pytest.raises(RuntimeError):
        run(_scenario(), base_dir=ROOT, out=tmp_path / "a" / "b" / "r", progress=boom)
    assert list(tmp_path.iterdir()) == []
