"""Result folders: Parquet/CSV round trips and atomic replacement."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from chironsim.errors import ChironError, ConfigError
from chironsim.experiments.result import Result, load_result
from chironsim.metrics import store
from chironsim.metrics.records import InstanceRecord, RequestRecord
from chironsim.metrics.slo import RequestClassSpec, SLOSpec

NAN = float("nan")
CLASSES = {"interactive": RequestClassSpec(slo=SLOSpec(ttft=1.0)), "batch": RequestClassSpec()}


def _request(rid, cls, status, ttft, generated, instances):
    done = status == "finished"
    return RequestRecord(
        request_id=rid, request_class=cls, arrival=0.1 * rid, prompt_tokens=64,
        output_tokens=16, generated_tokens=generated, status=status,
        first_token_time=0.1 * rid + ttft, finish_time=0.1 * rid + 1.0 if done else NAN,
        ttft=ttft, tpot=0.02 if done else NAN, itl_max=0.05 if done else NAN,
        e2e=1.0 if done else NAN, deadline=NAN if cls == "interactive" else 3600.0,
        preemptions=rid % 2, migrations=0, evictions=0, instances=instances,
        slo_met=done and ttft <= 1.0,
    )


def make_result(seed: int = 0, n: int = 12) -> Result:
    """A small result with NaNs, empty strings and both categories, varied by ``seed``."""
    rng = np.random.default_rng(seed)
    reqs = []
    for i in range(n):
        status = ("finished", "rejected", "unfinished")[int(rng.integers(0, 3))]
        ttft = float(rng.uniform(0.05, 2.0)) if status != "rejected" else NAN
        gen = 16 if status == "finished" else (0 if status == "rejected" else 4)
        where = "" if status == "rejected" else "i0;i1"
        reqs.append(_request(i, ("interactive", "batch")[i % 2], status, ttft, gen, where))
    insts = [
        InstanceRecord("i0", "mixed", "h100", "llama-3-8b", 1, 1, 0.0, 20.0, NAN, 100.0,
                       100.0, 1000, 200, 5, 300, 80.0),
        InstanceRecord("i1", "batch", "a100", "llama-3-8b", 2, 2, 5.0, 30.0, 90.0, 95.0,
                       180.0, 500, 100, 3, 150, 40.0),
    ]
    ts = [dict(time=float(t), pool=p, provisioning=0, loading=0, ready=1, draining=0,
               waiting=int(rng.integers(0, 5)), running=2,
               kv_utilization=NAN if t == 0 else float(rng.uniform()), max_num_seqs=128.0,
               tokens_per_s=float(rng.uniform(0, 1000)))
          for t in range(3) for p in ("mixed", "batch")]
    events = [dict(time=20.0, kind="instance_ready", pool="mixed", instance_id="i0",
                   request_id=-1, reason="", detail=""),
              dict(time=21.5, kind="reject", pool="", instance_id="", request_id=3,
                   reason="queue full", detail="a, b \"quoted\"")]
    manifest = {"seed": np.int64(seed), "config": {"policy": "static", "loads": [1.0, 2.5]},
                "version": "0.1.0"}
    return Result.from_records(reqs, insts, ts, events, classes=CLASSES, duration_s=100.0,
                               price_per_gpu_hour={"h100": 4.0, "a100": 2.0}, manifest=manifest)


def assert_same(a: Result, b: Result) -> None:
    for name in store.TABLES:
        pd.testing.assert_frame_equal(getattr(a, name), getattr(b, name), check_exact=True,
                                      obj=name)


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_round_trip(tmp_path, fmt):
    result = make_result()
    out = result.save(tmp_path / "run", fmt=fmt)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"{t}.{fmt}" for t in store.TABLES] + ["manifest.json"])
    back = Result.load(out)
    assert_same(result, back)
    assert back.manifest == {"seed": 0, "config": {"policy": "static", "loads": [1.0, 2.5]},
                             "version": "0.1.0"}
    assert back.requests["instances"].eq("").any()  # empty strings survive, not NaN
    assert back.events.loc[1, "detail"] == 'a, b "quoted"'


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_round_trip_of_empty_tables(tmp_path, fmt):
    empty = Result.from_records([], [], [], [], classes=CLASSES, duration_s=1.0,
                                price_per_gpu_hour={})
    back = load_result(empty.save(tmp_path / "empty", fmt=fmt))
    assert_same(empty, back)
    assert len(back.requests) == 0 and list(back.requests.columns) == list(empty.requests.columns)


def test_replacing_a_result_folder(tmp_path):
    out = tmp_path / "run"
    make_result(seed=1).save(out)
    make_result(seed=2, n=5).save(out, fmt="csv")
    back = Result.load(out)
    assert_same(make_result(seed=2, n=5), back)
    assert not any(p.suffix == ".parquet" for p in out.iterdir())
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # no temporary siblings left


def _fail_on_third_table(monkeypatch):
    real = store._write_table
    calls = []

    def flaky(frame, path, fmt):
        calls.append(path.name)
        if len(calls) == 3:
            raise OSError("disk full")
        real(frame, path, fmt)

    monkeypatch.setattr(store, "_write_table", flaky)


def test_failure_mid_write_leaves_no_folder(tmp_path, monkeypatch):
    _fail_on_third_table(monkeypatch)
    with pytest.raises(OSError, match="disk full"):
        make_result().save(tmp_path / "run")
    assert list(tmp_path.iterdir()) == []


def test_failure_mid_write_keeps_the_old_folder(tmp_path, monkeypatch):
    out = tmp_path / "run"
    old = make_result(seed=1)
    old.save(out)
    _fail_on_third_table(monkeypatch)
    with pytest.raises(OSError, match="disk full"):
        make_result(seed=2).save(out)
    assert [p.name for p in tmp_path.iterdir()] == ["run"]
    assert_same(old, Result.load(out))


def test_failed_swap_puts_the_old_folder_back(tmp_path, monkeypatch):
    out = tmp_path / "run"
    old = make_result(seed=1)
    old.save(out)
    real_rename = os.rename

    def rename(src, dst):
        if os.fspath(dst) == os.fspath(out) and ".tmp-" in os.fspath(src):
            raise OSError("rename failed")
        real_rename(src, dst)

    monkeypatch.setattr(store.os, "rename", rename)
    with pytest.raises(OSError, match="rename failed"):
        make_result(seed=2).save(out)
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["run"]
    assert_same(old, Result.load(out))


def test_refuses_to_replace_a_folder_that_is_not_a_result(tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(ChironError, match="not a chironsim result folder"):
        make_result().save(tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "keep me"


def test_writes_into_an_existing_empty_folder(tmp_path):
    (tmp_path / "run").mkdir()
    make_result().save(tmp_path / "run")
    assert store.is_result_dir(tmp_path / "run")


def test_format_and_folder_errors(tmp_path):
    with pytest.raises(ConfigError, match="xlsx"):
        make_result().save(tmp_path / "run", fmt="xlsx")
    with pytest.raises(ChironError, match="manifest.json"):
        Result.load(tmp_path)
    out = make_result().save(tmp_path / "run")
    (out / "events.parquet").unlink()
    assert not store.is_result_dir(out)
    with pytest.raises(ChironError, match="events"):
        Result.load(out)
