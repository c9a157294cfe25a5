"""The Llumnix experiment's L2-L4 stages (experiments/llumnix/run.py, serving.py): every
scenario of each stage's grid validates, and a tiny version of each stage runs through the
same code path (``run_jobs`` → ``serving.run_point`` → chironsim's runner) and yields the
rows the tables read. Structure only: no paper number is asserted here (seconds, not minutes).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest

HERE = Path(__file__).resolve().parent.parent / "experiments" / "llumnix"
sys.path.insert(0, str(HERE))

import serving  # noqa: E402
from experiment_modules import load as load_experiment  # noqa: E402

llumnix_run = load_experiment("llumnix", "run")
llumnix_tables = load_experiment("llumnix", "tables")

from chironsim.experiments.config import parse_config  # noqa: E402

ROW_KEYS = {"ttft_p50", "ttft_p99", "tpot_p99", "itl_max_p99", "preemptions", "recomputed_tokens_per_req",
            "migrations_done", "fragmentation", "blocked_share", "gpu_hours", "prompt_mean", "output_mean"}


def _validate(jobs):
    for _tags, cfg, _keep in jobs:
        parse_config(cfg, "<test>", HERE)


def test_full_grids_validate():
    """Every scenario the stages would run is a valid chironsim config (nothing runs)."""
    rates = {m: (12.0,) for m in llumnix_run.L2_MIXES}
    _validate(llumnix_run.l2scan_jobs())
    jobs = llumnix_run.l2_jobs(rates=rates)
    assert len(jobs) == len(rates) * len(llumnix_run.L2_CVS) * 4 * 3
    _validate(jobs)
    _validate(llumnix_run.l3_jobs(rate=12.0))
    _validate(llumnix_run.l4_jobs())


def test_policies_are_the_papers_four():
    cfgs = {p: serving.l2_scenario("sharegpt", p, 1.0, None, 1) for p in serving.POLICIES}
    assert cfgs["infaas++"]["policy"]["migration"] is False
    assert cfgs["infaas++"]["policy"]["dispatch"] == "infaas"
    assert cfgs["llumnix-base"]["policy"]["priority_agnostic"] is True
    assert cfgs["llumnix-base"]["cluster"]["engine"]["priority_scheduling"] is False
    assert cfgs["llumnix"]["cluster"]["engine"]["priority_scheduling"] is True
    assert all(c["policy"]["scaling"] is False for c in cfgs.values())
    for cfg in cfgs.values():  # no request can exceed the 4k context
        stream = cfg["workload"]["streams"][0]
        assert stream["max_prompt_tokens"] + stream["max_output_tokens"] <= 4096


def test_probe_changes_nothing():
    """The fragmentation probe only reads load reports: same request table with and without."""
    cfg = serving.l2_scenario("L-L", "llumnix", 3.0, 4.0, 1, num_requests=150, instances=2)
    with_probe, probe = serving.simulate(cfg)
    without, none = serving.simulate(cfg, probe=False)
    assert none is None and probe.samples > 0
    pd.testing.assert_frame_equal(with_probe.requests, without.requests)
    pd.testing.assert_frame_equal(with_probe.events, without.events)


def test_tiny_l2(tmp_path):
    jobs = llumnix_run.l2_jobs(rates={"sharegpt": (3.0,)}, cvs=(1.0, 4.0), seeds=(1,), num_requests=40)
    for _tags, cfg, _keep in jobs:
        cfg["cluster"]["pools"]["default"]["instances"] = 2
    table = llumnix_run.run_jobs(jobs, tmp_path / "l2.csv", workers=1)
    assert len(table) == 2 * 4
    assert ROW_KEYS <= set(table.columns)
    assert (table.requests == 40).all() and (table.rejected == 0).all()
    assert set(table.policy) == set(serving.POLICIES)
    assert (pd.read_csv(tmp_path / "l2.csv").shape[0]) == 8
    # no migration without it
    assert (table[table.policy.isin(["round_robin", "infaas++"])].migrations_started == 0).all()


def test_tiny_l3(tmp_path):
    jobs = llumnix_run.l3_jobs(rate=3.0, cvs=(1.0,), headrooms=(0, 64), seeds=(1,), num_requests=60)
    for _tags, cfg, _keep in jobs:
        cfg["cluster"]["pools"]["default"]["instances"] = 2
    table = llumnix_run.run_jobs(jobs, tmp_path / "l3.csv", workers=1)
    assert len(table) == 3
    assert {"high_ttft_p99", "normal_ttft_p99", "high_e2e_mean"} <= set(table.columns)
    assert (table.high_requests == 6).all() and (table.normal_requests == 54).all()
    headroom = next(c for _t, c, _k in jobs if c["policy"].get("headroom_blocks"))
    assert headroom["policy"]["headroom_blocks"] == {0: 64}


def test_tiny_l4(tmp_path):
    knobs = {"llumnix": (10.0,), "infaas+reactive": (0.7,)}
    jobs = llumnix_run.l4_jobs(knobs=knobs, cold=(0.0,), seeds=(1,), rates=(1.0, 3.0), times=(0.0, 30.0),
                               duration_s=60.0)
    for _tags, cfg, keep in jobs:
        assert keep is None or keep.endswith(".parquet")
    jobs = [(t, c, None) for t, c, _k in jobs]
    table = llumnix_run.run_jobs(jobs, tmp_path / "l4.csv", workers=1)
    assert len(table) == 4
    assert (table.gpu_hours > 0).all()
    assert set(table.policy) == {"llumnix", "infaas+reactive"}


def test_tables_print_from_csvs(tmp_path, monkeypatch):
    """tables.py prints every L2-L4 table from the tiny stages' CSVs."""
    jobs = llumnix_run.l2_jobs(rates={"sharegpt": (3.0,)}, cvs=(1.0,), seeds=(1, 2), num_requests=30)
    for _tags, cfg, _keep in jobs:
        cfg["cluster"]["pools"]["default"]["instances"] = 2
    llumnix_run.run_jobs(jobs, tmp_path / "l2.csv", workers=1)
    monkeypatch.setattr(llumnix_tables, "HERE", tmp_path)
    text = llumnix_tables.table_l2()
    assert "infaas++" in text and "llumnix" in text


@pytest.mark.parametrize("mix", llumnix_run.L2_MIXES)
def test_clip_keeps_requests_in_context(mix):
    cfg = serving.l2_scenario(mix, "infaas++", 1.0, None, 1)
    stream = cfg["workload"]["streams"][0]
    assert stream["max_prompt_tokens"] == serving.CLIP and stream["max_output_tokens"] == serving.CLIP


def test_the_30b_deployment_is_four_tp4_instances_within_its_2k_context() -> None:
    cfg = serving.l2_scenario("burstgpt", "llumnix", 2.0, 2.0, 1, deployment="30b")
    parse_config(cfg, "<30b>", HERE)
    assert cfg["cluster"]["model"] == "llama-30b"
    assert cfg["cluster"]["pools"]["default"] == {"instances": 4, "tp": 4}
    stream = cfg["workload"]["streams"][0]
    assert stream["max_prompt_tokens"] + stream["max_output_tokens"] <= 2048


def test_the_knee_rule_reads_the_scan() -> None:
    """The highest rate whose INFaaS++ P99 TTFT stays within KNEE_FACTOR of the lowest rate's,
    and the next scanned rate; the 7B scan gives the knees its grid was run at."""
    scan = pd.DataFrame({"mix": ["m"] * 4, "policy": ["infaas++"] * 4,
                         "rate": [1.0, 2.0, 3.0, 4.0], "ttft_p99": [0.4, 0.5, 0.61, 90.0]})
    assert llumnix_run.knees(scan) == ({"m": (2.0,)}, {"m": 3.0})
    at_knee, _ = llumnix_run.knees(pd.read_csv(HERE / "l2_scan.csv"))
    assert at_knee == llumnix_run.L2_RATES
