"""benchmarks/run_all.py: the benchmark suite of issue 12.

The suite is run by hand (minutes to hours); these tests only check that every case is a valid
scenario at both sizes, and that one short case runs end to end in its own interpreter and
comes back with the numbers the summary promises.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chironsim.experiments.config import parse_config
from experiment_modules import load_script

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "run_all.py"
SHARED_TRACES = ROOT.parent / "shared" / "traces"


@pytest.fixture(scope="module")
def suite():
    return load_script(SCRIPT, "run_all")


def test_every_case_is_a_valid_scenario(suite):
    checked = 0
    for name, (_, build) in suite.CASES.items():
        for quick in (False, True):
            cfg = build(quick)
            if "shared/traces" in json.dumps(cfg) and not SHARED_TRACES.is_dir():
                continue  # the Azure-hour cases replay ../shared/traces, absent here
            parse_config(cfg, name, ROOT)
            checked += 1
    assert checked >= 4  # the synthetic cases (Chiron batch, day, week) always validate


def test_sizes_of_the_scale_cases(suite):
    day, week = suite.CASES["day"][1], suite.CASES["week"][1]
    full_day = day(False)["workload"]["streams"][0]
    assert full_day["num_requests"] == 1_000_000 and full_day["duration_s"] == 86_400
    full_week = week(False)["workload"]["streams"][0]
    assert full_week["num_requests"] == 27_300_000 and full_week["duration_s"] == 7 * 86_400
    assert week(True)["duration_s"] == suite.QUICK_S
    assert week(False)["policy"]["max_instances"] == 64


def test_one_case_end_to_end(suite, tmp_path):
    assert suite.main(["--cases", "chiron-batch", "--json", "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    (row,) = summary["cases"]
    assert row["case"] == "chiron-batch" and row["size"] == "full"
    assert row["requests"] > 0 and row["sim_per_wall"] > 0 and row["peak_rss_mb"] > 0
    assert row["events"] > 0 and row["iterations"] > 0
    assert "| chiron-batch | full |" in (tmp_path / "summary.md").read_text()


def test_unknown_case_is_refused(suite):
    with pytest.raises(SystemExit):
        suite.main(["--cases", "nope"])
