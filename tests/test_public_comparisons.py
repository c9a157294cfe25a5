"""benchmarks/public_comparisons.py: the table of public whole-request figures against the model
(docs/latency-model.md, "Whole-request comparisons with public figures").

These tests check that the comparison runs and is well-formed, and that its replay is the
project's own reference replay. They do not assert that the errors are small: several are not,
and the docs say why.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from chironsim.catalog import get_gpu
from chironsim.perf import Efficiency
from chironsim.perf.reference import ReferenceCase, replay_seconds
from experiment_modules import load_script

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "public_comparisons.py"


@pytest.fixture(scope="module")
def pc():
    return load_script(SCRIPT, "public_comparisons")


@pytest.fixture(scope="module")
def rows(pc):
    return pc.compute()


def test_every_case_gives_a_finite_row(pc, rows):
    cases = pc.cases()
    assert len(rows) == len(cases) >= 40
    assert [r["id"] for r in rows] == list(range(1, len(rows) + 1))
    for row, case in zip(rows, cases):
        assert row["source"] in pc.SOURCES
        assert row["url"].startswith("https://")
        assert row["metric"] in pc.METRICS
        assert row["quote"]
        for key in ("published_s", "chironsim_s", "kernels_only_s"):
            assert math.isfinite(row[key]) and row[key] > 0, (row["id"], key)
        for key in ("error_pct", "kernels_only_error_pct"):
            assert math.isfinite(row[key]), (row["id"], key)
        assert row["error_pct"] == pytest.approx(100 * (row["chironsim_s"] / row["published_s"] - 1))
        # no engine overhead is never slower than the preset's overhead
        assert row["kernels_only_s"] <= row["chironsim_s"]
        assert row["case"]["model"] == case.model


def test_every_source_is_used_and_summarised(pc, rows):
    assert {r["source"] for r in rows} == set(pc.SOURCES)
    summary = pc.summarise(rows)
    assert [s["source"] for s in summary] == list(pc.SOURCES)
    assert sum(s["cases"] for s in summary) == len(rows)
    for s in summary:
        assert math.isfinite(s["median_abs_error_pct"])
        assert s["min_error_pct"] <= s["max_error_pct"]


def test_published_figures_convert_as_their_benchmarks_define_them(pc):
    # a static batch's latency is batch x output / (output tokens per second)
    static = pc.Case("trtllm-static", "Llama-2-7B", "H100-SXM", 1, 64, 128, 128, "request", 9193, "out tok/s", "")
    assert static.published_seconds() == pytest.approx(64 * 128 / 9193)
    per_token = pc.Case("gpt-fast", "Llama-2-7B", "A100-80GB", 1, 1, 5, 200, "per_token", 104.9, "out tok/s", "")
    assert per_token.published_seconds() == pytest.approx(1 / 104.9)
    assert pc.Case("nim", "Llama-3.1-70B", "H100-SXM", 2, 1, 500, 2000, "itl", 18.91, "ms", "").published_seconds() \
        == pytest.approx(0.01891)


def test_replay_is_the_reference_replay(pc):
    """A BF16 case with the default preset prices exactly as chironsim/perf/reference.py replays
    a public case (the schedule section 4 of the docs uses)."""
    case = next(c for c in pc.cases() if c.source == "lmdeploy" and c.model == "Llama-2-70B"
                and c.metric == "request" and c.batch == 1 and c.prompt == 128)
    timer = pc._timer(case, pc.engine_preset("default").overhead())
    ours = pc.predict_seconds(case, timer)
    reference = replay_seconds(
        ReferenceCase(name="x", model=case.model, gpu=case.gpu, tp=case.tp, batch=case.batch,
                      prompt_tokens=case.prompt, output_tokens=case.output, measured_s=0.0, source=""),
        Efficiency.for_gpu(get_gpu(case.gpu)))
    assert ours == pytest.approx(reference, rel=1e-12)
    # the other metrics are parts of the same replay
    ttft = pc.predict_seconds(pc.Case(**{**pc.asdict(case), "metric": "ttft"}), timer)
    itl = pc.predict_seconds(pc.Case(**{**pc.asdict(case), "metric": "itl"}), timer)
    per_token = pc.predict_seconds(pc.Case(**{**pc.asdict(case), "metric": "per_token"}), timer)
    assert ours == pytest.approx(ttft + (case.output - 1) * itl)
    assert per_token == pytest.approx(ours / case.output)


def test_markdown_and_json_output(pc, rows, capsys):
    table = pc.markdown(rows)
    body = [line for line in table.splitlines() if line.startswith("| ") and line[2:3].isdigit()]
    assert len(body) == len(rows)
    for line in body:
        assert line.count("|") == 9  # 8 columns
        assert "nan" not in line and "inf" not in line
    assert pc.main(["--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["rows"]) == len(rows)
    assert pc.main([]) == 0
    assert capsys.readouterr().out.strip() == table
