"""Running sweeps: tables, resume after a kill, failed runs, and executors that agree.

Every sweep here is the tiny scenario of ``test_sweep_spec`` (30 simulated seconds on one
instance), so a run takes a fraction of a second and the time goes to process start-up.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from pandas.testing import assert_frame_equal

from chironsim.cli import main
from chironsim.experiments.executors import error_file, run_dir
from chironsim.experiments.sweep import load_sweep, plan_sweep, run_sweep
from chironsim.metrics.store import is_result_dir
from test_sweep_spec import BASE, RATE, spec_with, write_sweep

REPO = Path(__file__).resolve().parents[1]
#: Columns that differ between two runs of the same point: timing, and whether it was resumed.
VOLATILE = ["wall_seconds", "resumed"]


def comparable(runs: pd.DataFrame) -> pd.DataFrame:
    return runs.drop(columns=VOLATILE)


def finished(out: Path) -> list[Path]:
    """Complete run folders under their real names (hidden temporaries never count)."""
    return [p for p in (out / "runs").glob("*") if not p.name.startswith(".") and is_result_dir(p)]


def manifest_mtimes(out: Path) -> dict[str, int]:
    return {p.name: (p / "manifest.json").stat().st_mtime_ns for p in finished(out)}


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, str]:
    """2 policies × 2 loads × 2 seeds through the CLI with two worker processes."""
    folder = tmp_path_factory.mktemp("local")
    spec = write_sweep(folder)
    out = folder / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "chironsim.cli", "sweep", str(spec), "--executor", "local",
         "--workers", "2", "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    return out, proc.returncode, proc.stdout + proc.stderr


def test_sweep_writes_tidy_runs_and_aggregated_summary(local_sweep) -> None:
    out, code, output = local_sweep
    assert code == 0, output
    assert "8 points (8 ok, 0 of them resumed, 0 failed)" in output
    assert "8/8" in output  # the progress bar counted runs
    assert (out / "spec.yaml").read_text() == (out.parent / "spec.yaml").read_text()

    runs = pd.read_parquet(out / "runs.parquet")
    assert runs["point_id"].nunique() == 8
    assert len(runs) == 8 * 2  # one row per point × request class (interactive, all)
    assert set(runs["request_class"]) == {"interactive", "all"}
    assert set(runs["status"]) == {"ok"} and runs["error"].isna().all()
    assert set(runs["policy"]) == {"static", "reactive"}
    assert set(runs[RATE]) == {2.0, 4.0} and set(runs["seed"]) == {7, 8}
    assert (runs["wall_seconds"] > 0).all() and (runs["requests"] > 0).all()
    for pid in runs["point_id"].unique():
        manifest = json.loads((run_dir(out, pid) / "manifest.json").read_text())
        row = runs[runs["point_id"] == pid].iloc[0]
        assert manifest["point_id"] == pid
        assert manifest["point"] == {"policy": row["policy"], RATE: row[RATE], "seed": row["seed"]}
        assert manifest["config"]["seed"] == row["seed"]

    summary = pd.read_parquet(out / "summary.parquet")
    assert len(summary) == 4 * 2 and (summary["n"] == 2).all()
    one = summary[(summary["policy"] == "reactive") & (summary[RATE] == 4.0)
                  & (summary["request_class"] == "all")].iloc[0]
    reps = runs[(runs["policy"] == "reactive") & (runs[RATE] == 4.0)
                & (runs["request_class"] == "all")]["ttft_p99"]
    assert one["ttft_p99_mean"] == pytest.approx(reps.mean())
    assert one["ttft_p99_ci_low"] <= one["ttft_p99_mean"] <= one["ttft_p99_ci_high"]
    loaded = load_sweep(out)
    assert_frame_equal(loaded.runs, runs)
    assert_frame_equal(loaded.summary, summary)


def test_one_worker_in_process_gives_identical_tables(local_sweep, tmp_path: Path) -> None:
    out, code, _ = local_sweep
    assert code == 0
    result = run_sweep(write_sweep(tmp_path), tmp_path / "out", workers=1, progress=False)
    assert_frame_equal(comparable(result.runs), comparable(pd.read_parquet(out / "runs.parquet")))
    assert_frame_equal(result.summary, pd.read_parquet(out / "summary.parquet"))


def test_rerun_resumes_without_touching_finished_runs(local_sweep, tmp_path: Path) -> None:
    out, code, _ = local_sweep
    assert code == 0
    copy = tmp_path / "out"
    subprocess.run(["cp", "-a", str(out), str(copy)], check=True)
    before = manifest_mtimes(copy)
    # A run lost in a crash: its folder gone and a half-written temporary left beside it.
    lost = sorted(before)[0]
    subprocess.run(["rm", "-r", str(run_dir(copy, lost))], check=True)
    leftover = copy / "runs" / f".{lost}.tmp-crashed"
    leftover.mkdir()
    (leftover / "manifest.json").write_text("{}")

    result = run_sweep(out.parent / "spec.yaml", copy, workers=1, progress=False)
    after = manifest_mtimes(copy)
    assert not leftover.exists()
    assert {k: v for k, v in after.items() if k != lost} == {k: v for k, v in before.items()
                                                             if k != lost}
    points = result.runs.drop_duplicates("point_id").set_index("point_id")
    assert (points["status"] == "ok").all()
    assert not points.loc[lost, "resumed"] and points.drop(index=lost)["resumed"].all()
    assert_frame_equal(comparable(result.runs), comparable(pd.read_parquet(out / "runs.parquet")))


def test_killed_sweep_resumes_where_it_stopped(tmp_path: Path) -> None:
    spec = spec_with(grid={RATE: [2.0, 3.0, 4.0, 5.0, 6.0, 7.0]}, replications=None)
    path = write_sweep(tmp_path, spec, base={**BASE, "duration_s": 60})
    out = tmp_path / "out"
    total = len(plan_sweep(path).points)
    proc = subprocess.Popen(
        [sys.executable, "-m", "chironsim.cli", "sweep", str(path), "--workers", "1",
         "--out", str(out), "--quiet"], cwd=REPO, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    try:
        while not finished(out):
            assert proc.poll() is None, "the sweep ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.005)
    finally:
        proc.kill()
        proc.wait()
    before = manifest_mtimes(out)
    assert 1 <= len(before) < total
    assert not (out / "runs.parquet").exists()

    assert main(["sweep", str(path), "--workers", "1", "--out", str(out), "--quiet"]) == 0
    after = manifest_mtimes(out)
    assert len(after) == total
    assert {k: after[k] for k in before} == before  # finished runs were not redone
    runs = pd.read_parquet(out / "runs.parquet").drop_duplicates("point_id").set_index("point_id")
    assert (runs["status"] == "ok").all()
    assert runs["resumed"].sum() == len(before)
    assert not [p for p in (out / "runs").iterdir() if p.name.startswith(".")]


def test_failed_run_is_recorded_and_retried(tmp_path: Path, capsys) -> None:
    header = "TIMESTAMP,ContextTokens,GeneratedTokens\n"
    lines = [f"2000-01-01 00:00:{s:02d}.000000,{100 + s},{10 + s}\n" for s in range(10)]
    (tmp_path / "good.csv").write_text(header + "".join(lines))
    bad = tmp_path / "bad.csv"
    bad.write_text(header + "".join(lines[:3]) + "2000-01-01 00:00:03.5,abc,12\n" + "".join(lines[3:]))
    base = {**BASE, "workload": {"streams": [{
        "kind": "trace", "format": "azure", "path": "good.csv", "request_class": "interactive"}]}}
    spec = spec_with(grid={"workload.streams.0.path": ["good.csv", "bad.csv"]}, replications=None)
    path = write_sweep(tmp_path, spec, base)
    out = tmp_path / "out"

    assert main(["sweep", str(path), "--workers", "1", "--out", str(out), "--quiet"]) == 1
    assert "error: 1 of 2 runs failed (TraceFormatError ×1; see " in capsys.readouterr().err
    runs = pd.read_parquet(out / "runs.parquet")
    failed = runs[runs["status"] == "failed"]
    assert len(failed) == 1 and failed["workload.streams.0.path"].item() == "bad.csv"
    assert failed["error"].item().startswith("TraceFormatError: ")
    assert "bad.csv:5: ContextTokens" in failed["error"].item()
    assert failed["request_class"].isna().all() and failed["slo_attainment"].isna().all()
    ok = runs[runs["status"] == "ok"]
    assert set(ok["workload.streams.0.path"]) == {"good.csv"} and len(ok) == 2
    pid = failed["point_id"].item()
    record = json.loads(error_file(out, pid).read_text())
    assert record["point"] == {"workload.streams.0.path": "bad.csv"}
    assert record["error_type"] == "TraceFormatError" and "bad.csv:5" in record["message"]
    assert "Traceback" in record["traceback"]
    summary = pd.read_parquet(out / "summary.parquet")
    assert set(summary["workload.streams.0.path"]) == {"good.csv"}

    # Retried as it is: still failing. Then fixed: the trace's content is part of the point's
    # identity, so the fixed trace makes a new point, which runs; the good one is resumed.
    assert main(["sweep", str(path), "--workers", "1", "--out", str(out), "--quiet"]) == 1
    assert pd.read_parquet(out / "runs.parquet")["point_id"].tolist().count(pid) == 1
    bad.write_text(header + "".join(lines))
    assert main(["sweep", str(path), "--workers", "1", "--out", str(out), "--quiet"]) == 0
    runs = pd.read_parquet(out / "runs.parquet").drop_duplicates("point_id")
    assert set(runs["status"]) == {"ok"} and pid not in set(runs["point_id"])
    fixed = runs[runs["workload.streams.0.path"] == "bad.csv"]
    assert not fixed["resumed"].item() and not error_file(out, fixed["point_id"].item()).exists()
    assert runs[runs["workload.streams.0.path"] == "good.csv"]["resumed"].item()


def test_ray_executor_gives_the_local_tables(local_sweep, tmp_path: Path) -> None:
    pytest.importorskip("ray")  # the optional extra: pip install 'chironsim[ray]'
    out, code, _ = local_sweep
    assert code == 0
    result = run_sweep(write_sweep(tmp_path), tmp_path / "out", executor="ray", workers=2,
                       progress=False)
    assert_frame_equal(comparable(result.runs), comparable(pd.read_parquet(out / "runs.parquet")))
    assert_frame_equal(result.summary, pd.read_parquet(out / "summary.parquet"))
