"""Sweep specs: grid expansion, point ids, and every spec mistake → one ``error:``, exit 2.

No simulation runs here: everything is checked while the spec is expanded, before any run.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from scipy import stats

from chironsim.cli import main
from chironsim.errors import ConfigError
from chironsim.experiments.aggregate import format_sweep_summary, mean_ci, summarize_sweep
from chironsim.experiments.fingerprint import scenario_fingerprint
from chironsim.experiments.spec import DEFAULT_METRICS, parse_spec, set_dotted
from chironsim.experiments.sweep import plan_sweep
from scenarios import light_scenario

RATE = "workload.streams.0.arrival.rate"

#: A scenario that simulates in a fraction of a second: 30 s of light traffic on one instance.
BASE: dict[str, Any] = light_scenario("sweep-test", seed=7, duration_s=30)

#: The issue's shape: 2 policies × 2 loads × 2 seeds.
SPEC: dict[str, Any] = {
    "name": "sweep-test",
    "base": "base.yaml",
    "grid": {
        "policy": [{"kind": "static"}, {"kind": "reactive", "target": 0.6}],
        RATE: [2.0, 4.0],
    },
    "replications": 2,
}


def write_sweep(folder: Path, spec: dict[str, Any] | str | None = None,
                base: dict[str, Any] | None = None) -> Path:
    """Write ``base.yaml`` and ``spec.yaml`` into ``folder``; returns the spec's path."""
    (folder / "base.yaml").write_text(yaml.safe_dump(base or BASE, sort_keys=False))
    path = folder / "spec.yaml"
    text = spec if isinstance(spec, str) else yaml.safe_dump(spec or SPEC, sort_keys=False)
    path.write_text(text)
    return path


def spec_with(**changes: Any) -> dict[str, Any]:
    spec = copy.deepcopy(SPEC)
    spec.update(changes)
    return spec


# ----------------------------------------------------------------------------- expansion


def test_grid_expands_to_every_combination_in_axis_order(tmp_path: Path) -> None:
    plan = plan_sweep(write_sweep(tmp_path))
    assert plan.axes == ("policy", RATE, "seed")
    assert [tuple(p.coords.values()) for p in plan.points] == [
        (policy, rate, seed) for policy in ("static", "reactive") for rate in (2.0, 4.0)
        for seed in (7, 8)]
    for p in plan.points:
        assert p.config.policy.kind == p.coords["policy"]
        assert p.config.workload.streams[0].arrival.rate == p.coords[RATE]
        assert p.config.seed == p.coords["seed"]
    assert plan.metrics == DEFAULT_METRICS
    assert plan.base_dir == tmp_path


def test_point_id_is_the_scenario_fingerprint(tmp_path: Path) -> None:
    # The id covers the resolved config and the content of every file a point reads (none
    # here: the streams are synthetic), exactly as the regression gate's fingerprint does.
    plan = plan_sweep(write_sweep(tmp_path))
    ids = [p.point_id for p in plan.points]
    assert len(set(ids)) == len(ids)
    for p in plan.points:
        canonical = json.dumps(p.config.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        payload = json.dumps({"config": canonical, "inputs": {}}, sort_keys=True,
                             separators=(",", ":"))
        assert p.point_id == hashlib.sha256(payload.encode()).hexdigest()[:16]
        assert p.point_id == scenario_fingerprint(p.config, plan.base_dir)[:16]
        assert p.inputs == {}


def test_identical_configs_share_a_point_id(tmp_path: Path) -> None:
    # 2.0 is the base's own rate and {kind: static} its default policy: the same config.
    spec = spec_with(grid={RATE: [2.0, 3.0], "cluster.pools.default.instances": [1]},
                     variants={"as-base": {"policy": {"kind": "static"}},
                               "lb": {"policy": {"kind": "static", "router": {"kind": "round_robin"}}}},
                     replications=None)
    plan = plan_sweep(write_sweep(tmp_path, spec))
    by = {(p.coords[RATE], p.coords["variant"]): p.point_id for p in plan.points}
    assert plan.axes == (RATE, "cluster.pools.default.instances", "variant")
    assert by[(2.0, "as-base")] != by[(3.0, "as-base")]
    assert by[(2.0, "as-base")] != by[(2.0, "lb")]
    twin = plan_sweep(write_sweep(tmp_path, spec_with(grid={RATE: [2.0]}, replications=None)))
    assert twin.points[0].point_id == by[(2.0, "as-base")]


def test_policy_values_may_be_kinds_or_variant_names(tmp_path: Path) -> None:
    spec = spec_with(grid={"policy": ["static", "reactive-tight"]},
                     variants={"reactive-tight": {"policy": {"kind": "reactive", "target": 0.3},
                                                  "policy.tolerance": 0.05}},
                     replications=None)
    plan = plan_sweep(write_sweep(tmp_path, spec))
    assert plan.axes == ("policy",)  # variants used by the policy axis make no axis of their own
    static, tight = plan.points
    assert static.coords == {"policy": "static"} and static.config.policy.kind == "static"
    assert tight.coords == {"policy": "reactive-tight"}
    assert (tight.config.policy.target, tight.config.policy.tolerance) == (0.3, 0.05)


def test_two_policies_of_one_kind_are_told_apart(tmp_path: Path) -> None:
    spec = spec_with(grid={"policy": [{"kind": "reactive", "target": 0.5},
                                      {"kind": "reactive", "target": 0.8}]}, replications=None)
    labels = [p.coords["policy"] for p in plan_sweep(write_sweep(tmp_path, spec)).points]
    assert labels == ["reactive(target=0.5)", "reactive(target=0.8)"]


def test_replications_count_from_the_base_seed_and_grid_seeds_work_too(tmp_path: Path) -> None:
    plan = plan_sweep(write_sweep(tmp_path, spec_with(grid={}, replications=3)))
    assert [p.config.seed for p in plan.points] == [7, 8, 9]
    plan = plan_sweep(write_sweep(tmp_path, spec_with(grid={"seed": [0, 5]}, replications=None)))
    assert [p.config.seed for p in plan.points] == [0, 5]


def test_inline_base_and_spec_objects(tmp_path: Path) -> None:
    data = spec_with(base=BASE)
    plan = plan_sweep(data)
    assert len(plan.points) == 8
    assert plan_sweep(parse_spec(data)).points == plan.points


def test_set_dotted_creates_mappings_and_indexes_lists() -> None:
    data: dict[str, Any] = {"a": [{"b": 1}]}
    set_dotted(data, "a.0.b", 2)
    set_dotted(data, "a[0].c.d", 3)
    set_dotted(data, "x.y", [1])
    assert data == {"a": [{"b": 2, "c": {"d": 3}}], "x": {"y": [1]}}
    with pytest.raises(ConfigError, match="has 1 entry; index 2 is out of range"):
        set_dotted(data, "a.2.b", 0)


# ----------------------------------------------------------------------------- mistakes


def sweep_error(tmp_path: Path, spec: dict[str, Any] | str, capsys: pytest.CaptureFixture[str],
                *extra: str) -> str:
    """Run ``chironsim sweep``; assert exit 2, one error, no traceback, nothing written."""
    path = write_sweep(tmp_path, spec)
    out = tmp_path / "out"
    assert main(["sweep", str(path), "--out", str(out), "--quiet", *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    assert not out.exists()
    return err


def test_unknown_grid_key_names_the_key_line_and_suggestion(tmp_path: Path, capsys) -> None:
    err = sweep_error(tmp_path, spec_with(grid={"cluster.pools.default.instancez": [1, 2]}), capsys)
    assert "spec.yaml:4: grid.cluster.pools.default.instancez" in err
    assert "unknown key; did you mean 'instances'" in err
    assert err.count("unknown key") == 1  # said once for the axis, not once per value


def test_unknown_spec_key(tmp_path: Path, capsys) -> None:
    err = sweep_error(tmp_path, "name: t\nbase: base.yaml\ngird: {seed: [1]}\n", capsys)
    assert "spec.yaml:3: gird: unknown key (expected one of: base, grid," in err


def test_empty_grid_values_are_an_error(tmp_path: Path, capsys) -> None:
    err = sweep_error(tmp_path, spec_with(grid={"policy": [{"kind": "static"}], RATE: []}), capsys)
    assert f"spec.yaml:6: grid.{RATE}: has no values" in err


def test_invalid_grid_value_names_key_and_value(tmp_path: Path, capsys) -> None:
    spec = spec_with(grid={"policy": [{"kind": "static"}, "reactive"], RATE: [2.0, -1.0]})
    err = sweep_error(tmp_path, spec, capsys)
    assert "2 problems" in err
    assert f"grid.{RATE}[1] = -1.0: workload.streams[0].arrival.rate: must be greater than 0" in err
    assert "grid.policy[1] = 'reactive': policy.target: required key is missing" in err


def test_invalid_variant_is_named(tmp_path: Path, capsys) -> None:
    spec = spec_with(variants={"big": {"cluster.gpu": "h100-sxm"}, "odd": {"cluster.gpu": "h101"}})
    err = sweep_error(tmp_path, spec, capsys)
    assert "variants.odd: cluster.gpu: unknown GPU 'h101'" in err


def test_other_spec_mistakes(tmp_path: Path, capsys) -> None:
    assert "give either replications or grid.seed" in sweep_error(
        tmp_path, spec_with(grid={"seed": [1, 2]}), capsys)
    assert "spec.yaml:2: base: scenario file" in sweep_error(
        tmp_path, spec_with(base="missing.yaml"), capsys)
    assert "'slo' is not a numeric summary column" in sweep_error(
        tmp_path, spec_with(metrics=["slo"]), capsys)
    assert "index 3 is out of range" in sweep_error(
        tmp_path, spec_with(grid={"workload.streams.3.arrival.rate": [1.0]}), capsys)
    assert "replications: must be greater than or equal to 1" in sweep_error(
        tmp_path, spec_with(replications=0), capsys)


def test_option_mistakes(tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    assert "add --executor ray" in sweep_error(tmp_path, SPEC, capsys, "--address", "x:6379")
    monkeypatch.setitem(__import__("sys").modules, "ray", None)  # as if Ray were not installed
    assert "pip install 'chironsim[ray]'" in sweep_error(tmp_path, SPEC, capsys, "--executor", "ray")


def test_refuses_an_out_folder_that_is_not_a_sweep(tmp_path: Path, capsys) -> None:
    path = write_sweep(tmp_path)
    out = tmp_path / "precious"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    assert main(["sweep", str(path), "--out", str(out), "--quiet"]) == 2
    assert "is not a chironsim sweep folder" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


# ----------------------------------------------------------------------------- aggregation


def test_mean_ci_is_the_student_t_interval() -> None:
    values = np.array([1.0, 2.0, 4.0, np.nan])
    mean, low, high = mean_ci(values)
    half = stats.t.ppf(0.975, 2) * np.std([1.0, 2.0, 4.0], ddof=1) / math.sqrt(3)
    assert mean == pytest.approx(7 / 3)
    assert (low, high) == pytest.approx((7 / 3 - half, 7 / 3 + half))
    one = mean_ci(np.array([5.0]))
    assert one[0] == 5.0 and math.isnan(one[1]) and math.isnan(one[2])


def test_summary_groups_over_seeds_only() -> None:
    import pandas as pd

    runs = pd.DataFrame({
        "point_id": list("abcdef"), "status": ["ok"] * 5 + ["failed"],
        "policy": ["static", "static", "reactive", "reactive", "reactive", "reactive"],
        "seed": [1, 2, 1, 2, 3, 4], "request_class": ["all"] * 5 + [None],
        "slo_attainment": [0.9, 0.7, 0.5, 0.6, 0.7, np.nan],
    })
    summary = summarize_sweep(runs, ["policy", "seed"], ["slo_attainment"])
    assert list(summary.columns) == ["policy", "request_class", "n", "slo_attainment_mean",
                                     "slo_attainment_ci_low", "slo_attainment_ci_high"]
    assert summary["policy"].tolist() == ["static", "reactive"]
    assert summary["n"].tolist() == [2, 3]  # the failed run is not a replication
    assert summary["slo_attainment_mean"].tolist() == pytest.approx([0.8, 0.6])
    text = format_sweep_summary(summary, ["policy", "seed"], ["slo_attainment"])
    assert "80.0% ±" in text and "60.0% ±" in text


def test_points_not_run_are_skipped_rows(tmp_path: Path) -> None:
    from chironsim.experiments.sweep import runs_table

    plan = plan_sweep(write_sweep(tmp_path))
    failed = plan.points[0].point_id
    runs = runs_table(plan, tmp_path / "nothing-here", set(),
                      {failed: {"point_id": failed, "status": "failed", "error": "E: boom"}})
    assert len(runs) == len(plan.points)  # one row, with no class, per point without a result
    assert runs["status"].tolist() == ["failed"] + ["skipped"] * (len(plan.points) - 1)
    assert runs["error"].tolist() == ["E: boom"] + [None] * (len(plan.points) - 1)
    assert runs["request_class"].isna().all() and runs["slo_attainment"].isna().all()
    assert runs["seed"].tolist() == [p.config.seed for p in plan.points]
