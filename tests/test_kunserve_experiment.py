"""The KunServe experiment (experiments/kunserve, issue 10 item 4): every stage's configs
validate, a tiny run of each stage works, the trace windows select exactly the paper's rows,
and K1's formula checks pass on the simulator — and fail when the simulator is altered."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

HERE = Path(__file__).resolve().parent.parent / "experiments" / "kunserve"
sys.path.insert(0, str(HERE))

import k1  # noqa: E402
import k2  # noqa: E402
import kunserve_setups as scenarios  # noqa: E402
from experiment_modules import load as load_experiment  # noqa: E402

from chironsim.experiments.config import load_config, parse_config  # noqa: E402
from chironsim.workload.build import build_workload  # noqa: E402

pytestmark = pytest.mark.skipif(not scenarios.TRACES.is_dir(), reason="../shared/traces not present")


def _validate(cfg: dict, tmp_path: Path, name: str):
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    config, _ = load_config(path)
    return config


def test_every_stage_config_validates(tmp_path):
    for policy in k1.POLICIES:
        config = _validate(k1.k1_scenario(policy, 1), tmp_path, f"k1-{policy}")
        assert config.policy.kind == scenarios.POLICIES[policy][0]["kind"]
    kinds = set()
    for (workload, hardware), loads in k2.LOADS.items():
        for policy in k2.POLICIES:
            cfg = scenarios.k2_scenario(workload, hardware, policy, loads[0], 1)
            config = _validate(cfg, tmp_path, f"{workload}-{hardware}-{policy}")
            kinds.add(config.policy.kind)
            engine = config.cluster.engine
            assert engine.preemption_mode == ("swap" if policy == "swap" else "recompute")
    assert kinds == {"static", "llumnix", "kunserve"}
    assert len(k2.jobs()) == sum(len(v) for v in k2.LOADS.values()) * len(k2.POLICIES) * len(scenarios.SEEDS)
    # the knee scan's and the ablation's configs: every (point, variant) at one load
    for (workload, hardware), loads in k2.KNEE_LOADS.items():
        _validate(scenarios.k2_scenario(workload, hardware, "kunserve", loads[0], 1), tmp_path, "knee")
    seen = {}
    for tags, cfg in k2.ablation_jobs(seeds=(1,)):
        if tags["load"] == k2.LOADS[(tags["workload"], tags["hardware"])][0]:
            seen[tags["variant"]] = _validate(cfg, tmp_path, f"ablation-{tags['variant']}").policy
    assert seen["recompute"].stale_requests == "recompute" and seen["no_restore"].restore is False
    assert seen["all_groups"].trigger_scope == "all_groups"


@pytest.mark.parametrize("key", ["conv", "code", "long"])
def test_trace_windows_are_exactly_the_chosen_rows(key):
    """The stream yields rows offset .. offset+count-1 of the file, in order."""
    w = scenarios.WINDOWS[key]
    path = scenarios.TRACES / w.file
    if w.format == "azure":
        with open(path, newline="") as fh:
            rows = [(int(r["ContextTokens"]), int(r["GeneratedTokens"])) for r in csv.DictReader(fh)]
    else:
        import json
        with open(path) as fh:
            rows = [(d["input_length"], d["output_length"]) for d in map(json.loads, fh)]
    want = rows[w.offset:w.offset + w.count]
    cfg = scenarios.k2_scenario(key, "8b-a100" if key == "long" else "7b-a10", "vllm", 1.0, 1)
    specs = list(build_workload(_parse(cfg).workload, np.random.SeedSequence(1), HERE, None))
    clip_p, clip_o = w.max_prompt or 10**9, w.max_output or 10**9
    got = [(s.prompt_tokens, s.output_tokens) for s in specs]
    assert len(got) == w.count
    assert got == [(max(1, min(p, clip_p)), max(1, min(o, clip_o))) for p, o in want]
    assert specs[0].arrival == 0.0


def _parse(cfg):
    return parse_config(cfg, "<test>", HERE)


def test_k1_stage_runs_and_its_checks_pass(tmp_path):
    kunserve_run = load_experiment("kunserve", "run")

    checks = kunserve_run.stage_k1(seeds=(1,), out=tmp_path)
    assert checks.ok.all() and len(checks) >= 10
    assert {"capacity after (blocks)", "exchange seconds, worst rel. error", "restore seconds",
            "pipelined rounds, worst rel. error"} <= set(checks.check)
    runs = pd.read_csv(tmp_path / "k1.csv")
    by = runs.set_index("policy")
    assert by.loc["kunserve", "drops"] >= 1 and by.loc["vllm", "drops"] == 0
    assert by.loc["kunserve", "ttft_p99"] < by.loc["vllm", "ttft_p99"]
    assert (tmp_path / "figures" / "k1_timeline.png").stat().st_size > 0


def test_k1_capacity_formula_matches_the_perf_module():
    from chironsim.catalog import get_gpu, get_model
    from chironsim.perf.drop import fused_kv_capacity_blocks
    from chironsim.perf.memory import kv_capacity_blocks

    f = k1.formulas()
    model, gpu = get_model(k1.MODEL), get_gpu(k1.GPU)
    assert f.blocks_after == fused_kv_capacity_blocks(model, gpu, 1, 2, 0.9, 16)
    assert f.blocks_before == kv_capacity_blocks(model, gpu, 1, 0.9, 16)
    assert f.blocks_after > 2 * f.blocks_before


def _tampered(tamper) -> pd.DataFrame:
    result, _, log = k1.simulate(k1.k1_scenario("kunserve", 1), probe=False, tamper=tamper)
    return pd.DataFrame(k1.check_run(result, log)).set_index("check")


def _scale(sim, attr: str, factor: float, offset: float = 0.0) -> None:
    fusion = sim.cluster.fusion
    inner = getattr(fusion, attr)
    setattr(fusion, attr, lambda *a: inner(*a) * factor + offset)


@pytest.mark.parametrize("attr, factor, offset, check", [
    ("_fused_blocks", 1, 1, "capacity after (blocks)"),
    ("_exchange_seconds", 1.01, 0.0, "exchange seconds, worst rel. error"),
    ("_restore_seconds", 1.01, 0.0, "restore seconds"),
])
def test_k1_checks_fail_when_the_simulator_departs_from_the_formula(attr, factor, offset, check):
    table = _tampered(lambda sim: _scale(sim, attr, factor, offset))
    assert not table.loc[[check], "ok"].all()


def test_k1_pipeline_check_fails_on_a_mispriced_round():
    def tamper(sim):
        fusion = sim.cluster.fusion
        factory = fusion._pipelined_time

        def make(leader, g):
            queues = factory(leader, g)
            price = queues.batch_time
            queues.batch_time = lambda *a: price(*a) * 1.001
            return queues
        fusion._pipelined_time = make
    table = _tampered(tamper)
    assert not table.loc[["pipelined rounds, worst rel. error"], "ok"].all()
    assert table.loc[["capacity after (blocks)"], "ok"].all()


def test_steady_period_matches_known_pipelines():
    # one micro-batch: its own latency; two equal ones on two stages: max(2a, 2b, a+h+b)
    assert k1.steady_period([[1.0, 2.0]], [0.5]) == pytest.approx(3.5)
    assert k1.steady_period([[1.0, 1.2], [1.0, 1.2]], [0.1, 0.1]) == pytest.approx(2.4)
    assert k1.steady_period([[1.0, 1.0], [1.0, 1.0]], [1.5, 1.5]) == pytest.approx(3.5)


def test_probe_changes_nothing():
    cfg = k1.k1_scenario("kunserve", 2)
    with_probe, _, _ = k1.simulate(cfg, probe=True, log_prices=True)
    without, _, _ = k1.simulate(cfg, probe=False, log_prices=False)
    pd.testing.assert_frame_equal(with_probe.requests, without.requests)
    pd.testing.assert_frame_equal(with_probe.events, without.events)


def test_k2_tiny_run_of_each_policy_and_workload():
    rows = []
    for workload, hardware, load in (("conv", "7b-a10", 1.0), ("burst", "7b-a10", 0.5)):
        for policy in k2.POLICIES:
            tags = {"workload": workload, "hardware": hardware, "policy": policy, "load": load, "seed": 1}
            cfg = scenarios.k2_scenario(workload, hardware, policy, load, 1)
            if workload == "conv":  # the first 60 requests of the window only
                cfg["workload"]["streams"][0]["limit"] = 60
            rows.append(k2.run_point(tags, cfg))
    table = pd.DataFrame(rows)
    assert (table.finished == table.requests).all()
    for col in ("ttft_p999", "itl_p50", "itl_p999", "queue_p99", "throughput_rps"):
        assert table[col].notna().all(), col
    swap = table[table.policy == "swap"]
    assert (swap.preempt == 0).all()  # swap mode swaps instead of recomputing


def test_fused_tpot_classifies_by_group_periods():
    events = pd.DataFrame({"time": [10.0, 20.0], "kind": ["drop", "split"], "instance_id": ["default-0"] * 2})
    requests = pd.DataFrame({
        "status": ["finished"] * 4, "tpot": [0.1, 0.2, 0.3, 0.4],
        "first_token_time": [11.0, 1.0, 11.0, 15.0], "finish_time": [19.0, 5.0, 19.0, 25.0],
        "instances": [["default-0"], ["default-1"], ["default-2"], ["default-1"]]})
    inside, outside, n_in, n_out = k2.fused_tpot(requests, events, 30.0)
    assert (n_in, n_out) == (1, 2) and inside == 0.1 and outside == pytest.approx(0.25)


def test_k2_tiny_ablation_and_leader_runs():
    kunserve_run = load_experiment("kunserve", "run")

    jobs = [(t, c) for t, c in k2.ablation_jobs(points=(("conv", "7b-a10"),), seeds=(1,))
            if t["load"] == 1.0 and t["variant"] in ("default", "recompute")]
    for _, cfg in jobs:
        cfg["workload"]["streams"][0]["limit"] = 80
    rows = [k2.run_point(t, c) for t, c in jobs]
    assert {r["variant"] for r in rows} == {"default", "recompute"}
    assert all(r["finished"] == r["requests"] == 80 for r in rows)
    cfg = scenarios.k2_scenario("conv", "7b-a10", "kunserve", 1.0, 1)
    cfg["workload"]["streams"][0]["limit"] = 120
    result, probe, log = k1.simulate(cfg)
    assert probe.rows and all(seconds > 0 for _, _, seconds in log.calls)
    # every round is priced with the group's limits: a pair schedules 2 x one engine's
    assert log.calls and log.limits == {(2 * 256, 2 * 8192)}
    assert callable(kunserve_run.stage_leader)


@pytest.mark.skipif(not (HERE / "k2.csv").exists(), reason="run.py has not been run")
def test_tables_print_from_the_committed_csvs(capsys):
    tables = load_experiment("kunserve", "tables")
    tables.main([])
    out = capsys.readouterr().out
    assert "## verdict" in out and "missing" not in out
