"""Sweep results stay true to their inputs: stale, repeated, orphaned and damaged work.

- A point's id covers the content of the files it reads: editing a trace reruns exactly the
  points that read it, and each file is hashed once per sweep.
- Workers die with a SIGKILLed sweep instead of racing the restarted one.
- A damaged run folder is reported and run again; a MemoryError or a killed worker fails only
  its own point.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest
from pandas.testing import assert_frame_equal

from chironsim.cli import main
from chironsim.errors import ChironError
from chironsim.experiments import executors
from chironsim.experiments import spec as spec_module
from chironsim.experiments.compare import compare
from chironsim.experiments.executors import Task, error_file, run_dir
from chironsim.experiments.sweep import plan_sweep, run_sweep
from test_sweep import REPO, comparable, finished, manifest_mtimes
from test_sweep_spec import BASE, RATE, spec_with, write_sweep

PATH = "workload.streams.0.path"
HEADER = "TIMESTAMP,ContextTokens,GeneratedTokens\n"


def trace_lines(prompt: int) -> str:
    return HEADER + "".join(f"2000-01-01 00:00:{s:02d}.000000,{prompt + s},{10 + s}\n"
                            for s in range(10))


def trace_sweep(folder: Path) -> Path:
    """Two traces × two seeds: four points, two reading each trace."""
    (folder / "a.csv").write_text(trace_lines(100))
    (folder / "b.csv").write_text(trace_lines(200))
    base = {**BASE, "workload": {"streams": [{
        "kind": "trace", "format": "azure", "path": "a.csv", "request_class": "interactive"}]}}
    return write_sweep(folder, spec_with(grid={PATH: ["a.csv", "b.csv"]}, replications=2), base)


def test_editing_a_trace_reruns_exactly_the_points_that_read_it(tmp_path: Path) -> None:
    path = trace_sweep(tmp_path)
    out = tmp_path / "out"
    first = run_sweep(path, out, workers=1, progress=False)
    points = first.runs.drop_duplicates("point_id").set_index("point_id")
    assert (points["status"] == "ok").all() and len(points) == 4
    digest = hashlib.sha256((tmp_path / "b.csv").read_bytes()).hexdigest()
    b_ids = set(points.index[points[PATH] == "b.csv"])
    for pid in b_ids:
        manifest = json.loads((run_dir(out, pid) / "manifest.json").read_text())
        assert manifest["inputs"] == {"workload.streams[0].path": digest}
    before = manifest_mtimes(out)

    (tmp_path / "a.csv").write_text(trace_lines(300))  # same name, new content
    again = run_sweep(path, out, workers=1, progress=False)
    points = again.runs.drop_duplicates("point_id").set_index("point_id")
    assert (points["status"] == "ok").all() and len(points) == 4
    assert set(points.index[points["resumed"]]) == b_ids  # the b.csv points were reused...
    assert {pid: manifest_mtimes(out)[pid] for pid in b_ids} == {pid: before[pid] for pid in b_ids}
    a_ids = set(points.index[points[PATH] == "a.csv"])
    assert not a_ids & set(before)  # ...and the a.csv points are new points, run now
    new_a = again.runs[(again.runs[PATH] == "a.csv") & (again.runs["request_class"] == "all")]
    old_a = first.runs[(first.runs[PATH] == "a.csv") & (first.runs["request_class"] == "all")]
    assert sorted(new_a["ttft_p50"]) != sorted(old_a["ttft_p50"])  # longer prompts, new numbers


def test_each_input_file_is_hashed_once_per_sweep(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    path = trace_sweep(tmp_path)
    calls: list[Path] = []
    real = spec_module.file_digest

    def counting(p: Path) -> str:
        calls.append(p)
        return real(p)

    monkeypatch.setattr(spec_module, "file_digest", counting)
    plan = plan_sweep(path)
    assert len(plan.points) == 4
    assert sorted(p.name for p in calls) == ["a.csv", "b.csv"]


def _children(pid: int) -> list[int]:
    """Process ids whose parent is ``pid`` (from /proc; no psutil)."""
    kids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(entry.name))
    return kids


def _running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's zombie waits for whoever adopted it to reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc (Linux)")
def test_workers_die_with_a_killed_sweep(tmp_path: Path) -> None:
    spec = spec_with(grid={RATE: [2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]}, replications=None)
    path = write_sweep(tmp_path, spec, base={**BASE, "duration_s": 120})
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "chironsim.cli", "sweep", str(path), "--workers", "2",
         "--out", str(out), "--quiet"], cwd=REPO, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 90
    try:
        while not finished(out):  # workers started and mid-sweep
            assert proc.poll() is None, "the sweep ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.01)
        workers = _children(proc.pid)
    finally:
        proc.kill()
        proc.wait()
    assert len(workers) >= 2
    deadline = time.monotonic() + 5
    while any(_running(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    alive = [pid for pid in workers if _running(pid)]
    for pid in alive:  # do not leave them behind if the test fails
        os.kill(pid, signal.SIGKILL)
    assert not alive, f"worker processes {alive} outlived their sweep by 5 s"
    done = len(finished(out))
    time.sleep(0.5)
    assert len(finished(out)) == done  # nothing went on writing results


def _damage(out: Path, pids: list[str]) -> dict[str, str]:
    """Three kinds of damage: a truncated table, a garbled manifest, a same-size garbage table."""
    truncated, garbled, garbage = (run_dir(out, pid) for pid in pids)
    requests = truncated / "requests.parquet"
    requests.write_bytes(requests.read_bytes()[: requests.stat().st_size // 2])
    (garbled / "manifest.json").write_text('{"name": "cut sh')
    summary = garbage / "summary.parquet"
    summary.write_bytes(b"x" * summary.stat().st_size)
    return {pids[0]: "requests.parquet has", pids[1]: "manifest", pids[2]: "summary.parquet"}


def test_damaged_run_folders_are_reported_and_rerun(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    spec = spec_with(grid={RATE: [2.0, 3.0, 4.0, 5.0]}, replications=None)
    path = write_sweep(tmp_path, spec)
    out = tmp_path / "out"
    first = run_sweep(path, out, workers=1, progress=False)
    pids = sorted(first.runs["point_id"].unique())
    expected = _damage(out, pids[:3])
    with pytest.raises(ChironError, match="requests.parquet"):
        compare([out / "runs" / pids[0]])
    capsys.readouterr()

    again = run_sweep(path, out, workers=1, progress=False)
    err = capsys.readouterr().err
    assert set(again.damaged) == set(expected)
    for pid, fragment in expected.items():
        assert fragment in again.damaged[pid]
        assert f"warning: {run_dir(out, pid)}: " in err
    points = again.runs.drop_duplicates("point_id").set_index("point_id")
    assert (points["status"] == "ok").all()
    assert set(points.index[~points["resumed"]]) == set(expected)
    assert_frame_equal(comparable(again.runs), comparable(first.runs))
    assert len(compare([out])) > 0  # the repaired folder reads again

    _damage(out, pids[1:4])  # the command line says so in its summary, and exits 0
    assert main(["sweep", str(path), "--workers", "1", "--out", str(out), "--quiet"]) == 0
    assert "(4 ok, 1 of them resumed, 3 rerun as their folder was damaged, 0 failed)" in (
        capsys.readouterr().out)
    quiet = run_sweep(path, out, workers=1, progress=False)  # and is reused from now on
    assert quiet.damaged == {} and quiet.runs["resumed"].all()


MEMORY_HOG = textwrap.dedent('''
    import resource, sys
    from chironsim.experiments import runner
    from chironsim.cli import main

    real = runner.run

    def run(config, base_dir=None, progress=None, **kwargs):
        if config.seed == 8:  # this point fills memory to the last bytes, as a simulation would
            hog = []
            for size in (8 << 20, 1 << 16, 1 << 10, 64):
                try:
                    while True:
                        hog.append(bytearray(size))
                except MemoryError:
                    pass
            raise MemoryError()
        return real(config, base_dir, progress, **kwargs)

    runner.run = run
    import io, pandas  # start Arrow's threads first: the limit is on what the runs take
    pandas.read_parquet(io.BytesIO(pandas.DataFrame({"a": [1]}).to_parquet()))
    with open("/proc/self/status") as fh:
        size = next(int(l.split()[1]) * 1024 for l in fh if l.startswith("VmSize:"))
    resource.setrlimit(resource.RLIMIT_AS, (size + (1 << 30), resource.RLIM_INFINITY))
    sys.exit(main(sys.argv[1:]))
''')


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_AS and /proc are Linux")
def test_a_memory_error_fails_only_its_point(tmp_path: Path) -> None:
    path = write_sweep(tmp_path, spec_with(grid={RATE: [2.0, 4.0]}, replications=3))
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-c", MEMORY_HOG, "sweep", str(path), "--workers", "1",
                           "--out", str(out), "--quiet"], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert "error: 2 of 6 runs failed (MemoryError ×2; see " in proc.stderr
    runs = pd.read_parquet(out / "runs.parquet").drop_duplicates("point_id")
    assert sorted(runs[runs["status"] == "failed"]["seed"]) == [8, 8]
    assert (runs[runs["seed"] != 8]["status"] == "ok").all()
    for pid in runs[runs["status"] == "failed"]["point_id"]:
        record = json.loads(error_file(out, pid).read_text())
        assert record["error_type"] == "MemoryError" and "in run\nMemoryError" in record["traceback"]


def fake_point(config: dict, base_dir: str, out_dir: str, point_id: str, point: dict,
               inputs: dict) -> dict:
    """Stands in for run_point in a worker: point ``kill`` dies as the OOM killer would do it."""
    if point.get("kill"):
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(0.2)
    return {"point_id": point_id, "status": "ok", "wall_seconds": 0.2}


def test_a_killed_worker_fails_only_its_point(tmp_path: Path) -> None:
    tasks = [Task({}, str(tmp_path), str(tmp_path), f"p{i}", {"i": i, "kill": i == 3})
             for i in range(8)]
    statuses = list(executors._process_pool(tasks, 2, work=fake_point))
    assert sorted(s["point_id"] for s in statuses) == sorted(t.point_id for t in tasks)
    failed = {s["point_id"]: s["error"] for s in statuses if s["status"] != "ok"}
    assert list(failed) == ["p3"] and failed["p3"].startswith("WorkerDied: ")
    assert json.loads(error_file(tmp_path, "p3").read_text())["error_type"] == "WorkerDied"
