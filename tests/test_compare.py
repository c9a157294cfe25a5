"""``chironsim compare`` and ``chironsim plot`` on real result folders and a sweep folder.

The sweep folder is built here from tiny real runs in the layout ``chironsim sweep`` writes
(``runs/<point_id>/`` result folders, ``runs.parquet``, ``summary.parquet``), so these tests
exercise the analysis side of that contract on their own.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure
from scipy import stats

from chironsim.cli import main
from chironsim.errors import ChironError
from chironsim.experiments.compare import (
    compare,
    comparison_table,
    find_load_axis,
    format_comparison,
    load_point_tables,
    load_sweep,
)
from chironsim.experiments.result import Result
from chironsim.experiments.runner import run
from chironsim.metrics.summary import SUMMARY_SCHEMA
from chironsim.plots import attainment_vs_load, instances_by_group, latency_cdf_by_group

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
RATE = "workload.streams.0.arrival.rate"
POLICIES = {
    "static": {"kind": "static"},
    "reactive": {"kind": "reactive", "target": 0.5, "interval_s": 5, "cooldown_s": 0,
                 "scale_down_stabilization_s": 10, "max_instances": 3},
}
RATES = (1.0, 4.0)
SEEDS = (0, 1)
METRICS = [name for name, _ in SUMMARY_SCHEMA if name != "request_class"]

BASE: dict[str, Any] = {
    "name": "compare-test",
    "seed": 0,
    "duration_s": 30,
    "drain_s": 60,
    "sample_interval_s": 2,
    "classes": {"interactive": {"slo": {"ttft": 1.0, "tpot": 0.05}}},
    "workload": {"streams": [{
        "kind": "synthetic", "request_class": "interactive",
        "arrival": {"kind": "poisson", "rate": 1.0},
        "prompt_tokens": {"kind": "lognormal", "median": 500, "sigma": 0.8},
        "output_tokens": {"kind": "lognormal", "median": 100, "sigma": 0.8},
        "max_output_tokens": 500, "duration_s": 30,
    }]},
    "cluster": {"model": "llama-3-8b", "gpu": "a10g", "engine": {"max_num_seqs": 16},
                "pools": {"default": {"instances": 1}}},
}


def _config(policy: str, rate: float, seed: int) -> dict[str, Any]:
    cfg = copy.deepcopy(BASE)
    cfg["seed"] = seed
    cfg["workload"]["streams"][0]["arrival"]["rate"] = rate
    cfg["policy"] = POLICIES[policy]
    return cfg


def _mean_ci(values: np.ndarray) -> tuple[float, float, float]:
    values = values[~np.isnan(values)]
    if len(values) == 0:
        return math.nan, math.nan, math.nan
    mean = float(values.mean())
    if len(values) < 2:
        return mean, math.nan, math.nan
    half = float(stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values)))
    return mean, mean - half, mean + half


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """policy × arrival rate × seed, 8 tiny runs, in the sweep folder layout."""
    out = tmp_path_factory.mktemp("sweep")
    rows = []
    for policy in POLICIES:
        for rate in RATES:
            for seed in SEEDS:
                point_id = f"{policy}-r{rate:g}-s{seed}"
                result = run(_config(policy, rate, seed))
                point = {"policy": policy, "seed": seed, RATE: rate}
                result.manifest.update(point=point, point_id=point_id)
                result.save(out / "runs" / point_id)
                for _, srow in result.summary.iterrows():
                    rows.append({"point_id": point_id, "status": "ok", "error": "", **point,
                                 **srow.to_dict()})
    # A failed point: listed in runs.parquet, no folder; the analysis must skip it.
    rows.append({"point_id": "reactive-r4-s9", "status": "error", "error": "boom",
                 "policy": "reactive", "seed": 9, RATE: 4.0, "request_class": "all",
                 **{m: np.nan for m in METRICS}})
    runs = pd.DataFrame(rows)
    runs.to_parquet(out / "runs.parquet", index=False)
    ok = runs[runs["status"] == "ok"]
    agg = []
    for (policy, rate, cls), part in ok.groupby(["policy", RATE, "request_class"], sort=False):
        row: dict[str, Any] = {"policy": policy, RATE: rate, "request_class": cls, "n": len(part)}
        for m in METRICS:
            row[f"{m}_mean"], row[f"{m}_ci_low"], row[f"{m}_ci_high"] = _mean_ci(
                part[m].to_numpy(dtype=float))
        agg.append(row)
    pd.DataFrame(agg).to_parquet(out / "summary.parquet", index=False)
    (out / "spec.yaml").write_text("# written by the test\n")
    return out


@pytest.fixture(scope="module")
def run_dirs(sweep_dir: Path) -> tuple[Path, Path]:
    """Two single result folders (copies of sweep points, as 'chironsim run' would write)."""
    a, b = sweep_dir.parent / "static-run", sweep_dir.parent / "reactive-run"
    Result.load(sweep_dir / "runs" / "static-r4-s0").save(a)
    Result.load(sweep_dir / "runs" / "reactive-r4-s0").save(b)
    return a, b


# ----------------------------------------------------------------------------- compare


def test_compare_single_runs_reports_their_summary(run_dirs: tuple[Path, Path]) -> None:
    a, b = run_dirs
    tidy = compare([a, b])
    assert list(dict.fromkeys(tidy["run"])) == ["static-run", "reactive-run"]
    for folder in (a, b):
        summary = Result.load(folder).summary
        rows = tidy[tidy["run"] == folder.name].set_index(["request_class", "metric"])
        for _, srow in summary.iterrows():
            for metric in ("slo_attainment", "ttft_p50", "ttft_p99", "tpot_p50", "tpot_p99"):
                assert rows.loc[(srow["request_class"], metric), "value"] == pytest.approx(
                    srow[metric], nan_ok=True)
        assert rows.loc[("cluster", "gpu_hours"), "value"] == pytest.approx(summary["gpu_hours"][0])
        assert rows.loc[("cluster", "goodput_tokens_per_gpu_hour"), "value"] == pytest.approx(
            summary["goodput_tokens_per_gpu_hour"][0])
        assert (rows["n"] == 1).all() and rows["ci_low"].isna().all()


def test_compare_table_has_units_and_one_column_per_run(run_dirs: tuple[Path, Path]) -> None:
    a, b = run_dirs
    table = comparison_table(compare([a, b]))
    assert list(table.columns) == ["class", "metric", "static-run", "reactive-run"]
    labels = set(table["metric"])
    assert "SLO attainment (%)" in labels
    assert "GPU-hours (GPU-h)" in labels and "goodput (tokens/GPU-h)" in labels
    assert any(m.startswith("TTFT p99 (") for m in labels)
    summary = Result.load(a).summary
    row = table[(table["class"] == "interactive") & (table["metric"] == "SLO attainment (%)")]
    assert row["static-run"].item() == f"{summary['slo_attainment'][0] * 100:.3g}"
    text = format_comparison(table)
    assert "static-run" in text and "reactive-run" in text and "GPU-hours" in text


def test_compare_sweep_points_show_mean_and_ci(sweep_dir: Path) -> None:
    tidy = compare([sweep_dir])
    runs = list(dict.fromkeys(tidy["run"]))
    assert len(runs) == len(POLICIES) * len(RATES)
    assert "policy=static rate=1" in runs
    summary = pd.read_parquet(sweep_dir / "summary.parquet")
    want = summary[(summary["policy"] == "reactive") & (summary[RATE] == 4.0)
                   & (summary["request_class"] == "interactive")].iloc[0]
    got = tidy[(tidy["run"] == "policy=reactive rate=4") & (tidy["request_class"] == "interactive")
               & (tidy["metric"] == "ttft_p99")].iloc[0]
    assert got["value"] == pytest.approx(want["ttft_p99_mean"])
    assert got["ci_high"] == pytest.approx(want["ttft_p99_ci_high"])
    assert got["n"] == 2  # the failed seed-9 point is not counted
    table = comparison_table(tidy)
    cells = table.loc[table["metric"].str.startswith("TTFT p99"), "policy=reactive rate=4"]
    assert all("±" in c for c in cells)


def test_compare_cli_prints_and_writes_csv(run_dirs: tuple[Path, Path], sweep_dir: Path,
                                           tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    csv = tmp_path / "table.csv"
    assert main(["compare", str(run_dirs[0]), str(sweep_dir), "--csv", str(csv)]) == 0
    out = capsys.readouterr().out
    assert "SLO attainment (%)" in out and "static-run" in out and "rate=4" in out
    written = pd.read_csv(csv)
    assert list(written.columns[:3]) == ["class", "metric", "static-run"]
    assert len(written.columns) == 2 + 1 + len(POLICIES) * len(RATES)


def test_compare_rejects_a_folder_that_is_neither(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "stuff").mkdir()
    assert main(["compare", str(tmp_path / "stuff")]) == 2
    err = capsys.readouterr().err
    assert "stuff" in err and "neither a result folder" in err and "Traceback" not in err
    assert main(["compare", str(tmp_path / "missing")]) == 2
    assert "folder not found" in capsys.readouterr().err


# ----------------------------------------------------------------------------- plot


def test_find_load_axis() -> None:
    assert find_load_axis(["policy", "seed", RATE]) == RATE
    two = ["policy", "workload.streams.0.rate_scale", "workload.streams.1.arrival.rate"]
    assert find_load_axis(two) == "workload.streams.0.rate_scale"
    assert find_load_axis(two, "workload.streams.1.arrival.rate") == two[2]
    assert find_load_axis(["policy", RATE], "rate") == RATE
    with pytest.raises(ChironError, match="pick one with --x"):
        find_load_axis(["workload.streams.0.arrival.rate", "workload.streams.1.arrival.rate"])
    with pytest.raises(ChironError, match=r"no load axis.*policy, cluster\.pools\.default\.instances"):
        find_load_axis(["policy", "seed", "cluster.pools.default.instances"])
    with pytest.raises(ChironError, match="not an axis"):
        find_load_axis(["policy", RATE], "seed")


def test_sweep_figure_functions_draw_one_line_per_policy(sweep_dir: Path) -> None:
    sweep = load_sweep(sweep_dir)
    assert sweep.axes == ("policy", RATE, "seed")
    fig = Figure()
    ax = attainment_vs_load(sweep.summary, fig.add_subplot(), RATE, ["policy"])
    assert [t.get_text() for t in ax.get_legend().get_texts()] == list(POLICIES)
    assert len(ax.get_lines()) == len(POLICIES)
    np.testing.assert_allclose(ax.get_lines()[0].get_xdata(), RATES)
    # a confidence band per policy (two seeds each)
    assert sum(isinstance(c, PolyCollection) for c in ax.collections) == len(POLICIES)

    requests, timeseries, at = load_point_tables(sweep, RATE)
    assert at == max(RATES)
    assert set(requests["seed"]) == set(SEEDS) and set(requests["policy"]) == set(POLICIES)
    assert set(timeseries["seed"]) == {min(SEEDS)}
    ax = latency_cdf_by_group(requests, Figure().add_subplot(), "ttft", ["policy"])
    assert len(ax.get_lines()) == len(POLICIES)
    ax = instances_by_group(timeseries, Figure().add_subplot(), ["policy"])
    reactive = ax.get_lines()[list(POLICIES).index("reactive")]
    assert max(reactive.get_ydata()) > 1  # the reactive policy scaled up at the high load


def test_plot_cli_writes_sweep_figures(sweep_dir: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "figs"
    assert main(["plot", str(sweep_dir), "--out", str(out), "--at", "1"]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(["slo_attainment_vs_load.png", "gpu_hours_vs_load.png",
                            "ttft_cdf.png", "tpot_cdf.png", "instances.png"])
    for png in out.iterdir():
        assert png.read_bytes()[:8] == PNG_MAGIC
    assert str(out / "instances.png") in capsys.readouterr().out


def test_plot_cli_single_run_and_bad_options(run_dirs: tuple[Path, Path], sweep_dir: Path,
                                             tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "single"
    assert main(["plot", str(run_dirs[0]), "--out", str(out)]) == 0
    assert {"latency_cdf_ttft.png", "instances.png", "kv_utilization.png"} <= {
        p.name for p in out.iterdir()}
    capsys.readouterr()
    assert main(["plot", str(sweep_dir), "--out", str(tmp_path / "x"), "--x", "nope"]) == 2
    assert "--x nope: not an axis of this sweep (axes: policy" in capsys.readouterr().err
    assert main(["plot", str(sweep_dir), "--out", str(tmp_path / "y"), "--at", "3"]) == 2
    assert "--at 3.0: " in capsys.readouterr().err


def test_damaged_tables_are_user_errors_naming_the_file(sweep_dir: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    import shutil

    sweep = tmp_path / "sweep"
    shutil.copytree(sweep_dir, sweep)
    requests = sweep / "runs" / "static-r4-s0" / "requests.parquet"
    requests.write_bytes(requests.read_bytes()[:100])
    for argv in (["plot", str(sweep), "--out", str(tmp_path / "figs")],
                 ["compare", str(sweep / "runs" / "static-r4-s0")]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {requests}: ") and "Traceback" not in err
    assert not (tmp_path / "figs").exists()
    runs = sweep / "runs.parquet"
    runs.write_bytes(runs.read_bytes()[:-8])
    assert main(["compare", str(sweep)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {runs}: cannot read the sweep table") and "Traceback" not in err


def test_compare_shows_the_tail_metrics_of_issue_10(run_dirs: tuple[Path, Path], sweep_dir: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    """ITL percentiles, TTFT p99.9 and queueing time, from runs and from sweep points."""
    metrics = ["ttft_p999", "itl_p50", "itl_p99", "itl_p999", "queue_p99"]
    tidy = compare([run_dirs[0], sweep_dir], metrics)
    summary = Result.load(run_dirs[0]).summary.set_index("request_class")
    rows = tidy[tidy["run"] == run_dirs[0].name].set_index(["request_class", "metric"])
    for metric in metrics:
        assert rows.loc[("interactive", metric), "value"] == summary.loc["interactive", metric]
        assert summary.loc["interactive", metric] > 0
    point = tidy[(tidy["run"] == "policy=static rate=4") & (tidy["metric"] == "itl_p999")]
    assert point["value"].notna().all() and (point["n"] == 2).all()
    table = comparison_table(tidy)
    assert {"ITL p99.9 (ms)", "TTFT p99.9 (ms)", "queue p99 (ms)"} <= set(table["metric"]) or \
        any(m.startswith("ITL p99.9 (") for m in table["metric"])
    assert main(["compare", str(run_dirs[0]), "--metrics", "itl_p99", "queue_p50"]) == 0
    out = capsys.readouterr().out
    assert "ITL p99" in out and "queue p50" in out and "TPOT" not in out
    with pytest.raises(ChironError, match="unknown metric 'itl_p42'"):
        compare([run_dirs[0]], ["itl_p42"])
