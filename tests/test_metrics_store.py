"""Result folders: Parquet/CSV round trips and atomic replacement."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from chironsim.errors import ChironError, ConfigError
from chironsim.experiments.result import Result, load_result
from chironsim.metrics import atomic, store
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


# ----------------------------------------------------------------------------- integrity


def _dead_pid() -> int:
    """The id of a process that has just ended (not reused within the test, in practice)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_temporaries_of_dead_writers_are_removed_on_the_next_save(tmp_path):
    host = atomic._host()
    dead = tmp_path / f".killed.tmp-{_dead_pid()}@{host}~abc"
    dead_old = tmp_path / f".run.old-{_dead_pid()}@{host}~def"
    live = tmp_path / f".busy.tmp-{os.getppid()}@{host}~ghi"  # a live process's, still filling
    remote = tmp_path / f".far.tmp-{_dead_pid()}@another-host~jkl"  # cannot tell: kept
    legacy = tmp_path / ".old-style.tmp-xyz"  # no writer tag: kept outside a sweep's folder
    for folder in (dead, dead_old, live, remote, legacy):
        folder.mkdir()
        (folder / "requests.parquet").write_bytes(b"half")
    make_result().save(tmp_path / "run")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["run", live.name, remote.name, legacy.name])
    assert atomic.remove_stale_temporaries(tmp_path, untagged=True) == [tmp_path / legacy.name]


def test_plots_are_in_the_folder_when_it_appears(tmp_path, monkeypatch):
    out = make_result().save(tmp_path / "run", plots=True)
    assert len(list((out / "plots").glob("*.png"))) == 6
    assert [p.name for p in tmp_path.iterdir()] == ["run"]

    import chironsim.plots as plots

    def fail_halfway(result, folder):
        folder.mkdir()
        (folder / "latency_cdf_ttft.png").write_bytes(b"\x89PNG")
        raise OSError("disk full")

    monkeypatch.setattr(plots, "write_standard_plots", fail_halfway)
    with pytest.raises(OSError, match="disk full"):
        make_result(seed=3).save(tmp_path / "other", plots=True)
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # no folder lacking its plots


@pytest.mark.parametrize("recorded", [True, False], ids=["sizes", "older-folder"])
def test_a_truncated_table_is_found_and_named(tmp_path, recorded):
    out = make_result().save(tmp_path / "run")
    if not recorded:  # folders written before the manifest recorded sizes: the footer tells
        manifest = json.loads((out / "manifest.json").read_text())
        del manifest["files"]
        (out / "manifest.json").write_text(json.dumps(manifest))
    assert store.result_dir_problem(out) is None
    table = out / "timeseries.parquet"
    table.write_bytes(table.read_bytes()[:-10])
    assert store.is_result_dir(out)  # still looks like one...
    problem = store.result_dir_problem(out)
    assert problem is not None and problem.startswith("timeseries.parquet ")
    with pytest.raises(ChironError, match=r"timeseries\.parquet: .*run it again"):
        Result.load(out)  # ...but reading it is a user error naming the file


def test_a_damaged_manifest_is_named(tmp_path):
    out = make_result().save(tmp_path / "run")
    (out / "manifest.json").write_bytes(b'{"seed": \xff')
    assert "cannot read the manifest" in store.result_dir_problem(out)
    with pytest.raises(ChironError, match=r"manifest\.json: cannot read the manifest"):
        Result.load(out)
