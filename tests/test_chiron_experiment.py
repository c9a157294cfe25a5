"""The Chiron experiment's scenario builders (experiments/chiron/run.py): every policy of both
studies builds a config that validates, and the Llumnix baselines (issue 9 item 10) are laid
out and tuned as REPORT.md says."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from chironsim.experiments.config import parse_config
from experiment_modules import load as load_experiment

REPO = Path(__file__).resolve().parents[1]
HERE = REPO / "experiments" / "chiron"
SHARED_TRACES = REPO.parent / "shared" / "traces"
chiron_run = load_experiment("chiron", "run")

needs_traces = pytest.mark.skipif(not SHARED_TRACES.is_dir(),
                                  reason="the study replays ../shared/traces, absent here")
SIZING = {"interactive": 3, "batch": 2}


@needs_traces
@pytest.mark.parametrize("model", sorted(chiron_run.STUDIES))
def test_every_policy_of_every_study_validates(model: str, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    study = chiron_run.STUDIES[model]
    # llumnix-tuned reads the tuning stage's choice: point it at a file of our own
    monkeypatch.setattr(chiron_run.Study, "table",
                        lambda self, stem, ext: tmp_path / f"{stem}.{ext}")
    (tmp_path / "llumnix_tuning.json").write_text(
        "{" + ", ".join(f'"{label}": "rr-half"' for label in study.loads) + "}")
    for label, load in study.loads.items():
        for policy in study.policies:
            cfg = chiron_run.scenario(study, policy, load, 2, SIZING)
            parse_config(cfg, f"<{policy}>", chiron_run.CONFIGS)
            if policy == "llumnix-tuned":
                assert cfg["policy"]["dispatch"] == "round_robin"
        for point in chiron_run.LLUMNIX_GRID:
            parse_config(chiron_run.tuning_scenario(study, label, point), f"<{point}>",
                         chiron_run.CONFIGS)


@needs_traces
@pytest.mark.parametrize("model", sorted(chiron_run.STUDIES))
def test_llumnix_serves_both_classes_from_one_pool_within_the_gpu_budget(model: str) -> None:
    study = chiron_run.STUDIES[model]
    base = chiron_run.load_base(study)
    pools = base["cluster"]["pools"]
    start = sum(p["instances"] for p in pools.values())
    budget = sum(p["max_instances"] for p in pools.values())
    for point in chiron_run.LLUMNIX_GRID:
        cfg = chiron_run.with_load(base, 1.0)
        chiron_run.llumnix_point(cfg, chiron_run._tp(cfg), point)
        (name, pool), = cfg["cluster"]["pools"].items()
        assert "classes" not in pool and pool["instances"] == start
        assert start <= pool["max_instances"] <= budget
        share = chiron_run.LLUMNIX_CAP_SHARES[point.split("-", 1)[1]]
        assert pool["max_instances"] == max(start, int(budget * share))
        assert cfg["policy"]["kind"] == "llumnix"
    # the untuned baseline is the released code's defaults with the whole budget
    cfg = chiron_run.scenario(study, "llumnix", 1.0, 1, SIZING)
    assert cfg["policy"] == {"kind": "llumnix", "dispatch": "llumnix"}
    assert cfg["cluster"]["pools"]["serving"]["max_instances"] == budget


def _point(name: str, interactive: float, batch: float, hours: float, goodput: float) -> dict:
    return {"point": name, "slo_interactive": interactive, "slo_batch": batch,
            "gpu_hours": hours, "goodput_per_gpu_hour": goodput}


def test_tuning_picks_the_cheapest_point_that_meets_both_targets() -> None:
    rows = pd.DataFrame([_point("a", 0.999, 0.70, 40.0, 1.0),   # misses the batch deadline
                         _point("b", 0.96, 1.0, 12.0, 3.0),
                         _point("c", 0.97, 1.0, 10.0, 2.5),
                         _point("d", 0.90, 1.0, 5.0, 9.0)])     # misses the interactive bar
    assert chiron_run.choose_point(rows) == "c"


def test_tuning_falls_back_to_goodput_per_gpu_hour_when_no_point_meets_the_targets() -> None:
    rows = pd.DataFrame([_point("a", 0.999, 0.70, 40.0, 1.0),
                         _point("d", 0.90, 1.0, 5.0, 9.0),
                         _point("e", 0.80, 0.9, 4.0, 8.0)])
    assert chiron_run.choose_point(rows) == "d"
