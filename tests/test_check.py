"""``chironsim check``: shipped baselines hold, deliberate changes fail readably, ``--update``
round-trips, and malformed regression files are exit status 2 naming the file, line and key."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml

from chironsim.cli import main
from chironsim.experiments import check as check_module
from chironsim.experiments.check import load_regression, regression_files
from chironsim.experiments.runner import run

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "configs" / "regression"

# A scenario small enough to simulate in a fraction of a second, inline in a regression file.
TINY = """\
# a comment that --update must keep
description: tiny check scenario
scenario:
  name: tiny
  seed: 5
  duration_s: 30
  drain_s: 60
  sample_interval_s: 5
  classes:
    interactive:
      slo: {ttft: 1.0, tpot: 0.05}
  workload:
    streams:
      - kind: synthetic
        request_class: interactive
        arrival: {kind: poisson, rate: 3.0}
        prompt_tokens: {kind: lognormal, median: 500, sigma: 0.8}
        output_tokens: {kind: lognormal, median: 100, sigma: 0.8}
        max_output_tokens: 500
        duration_s: 30
  cluster:
    model: llama-3-8b
    gpu: a10g
    pools:
      default: {instances: 1}
"""


@pytest.fixture
def no_simulation(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bad files must be refused before anything is simulated."""
    def refuse(_regression: object) -> None:
        raise AssertionError("simulated although a regression file is invalid")

    monkeypatch.setattr(check_module, "simulate", refuse)


def test_shipped_regressions_pass(capsys: pytest.CaptureFixture) -> None:
    files = regression_files(SHIPPED)
    kinds = {load_regression(f).config.policy.kind for f in files}
    assert {"static", "reactive"} <= kinds, "ship a regression scenario per built-in policy"
    assert main(["check", str(SHIPPED)]) == 0
    out = capsys.readouterr().out
    assert len(re.findall(r"^PASS ", out, re.M)) == len(files)
    assert "FAIL" not in out
    for f in files:  # the CLI ran exactly the files found, all with baselines
        assert load_regression(f).spec.baseline


def test_shipped_reactive_scenario_actually_scales() -> None:
    reactive = [r for r in map(load_regression, regression_files(SHIPPED))
                if r.config.policy.kind == "reactive"]
    result = run(reactive[0].config, reactive[0].base_dir)
    kinds = set(result.events["kind"])
    assert {"scale_up", "scale_down"} <= kinds


def test_changed_policy_fails_with_a_readable_diff(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    source = SHIPPED / "reactive_spike.yaml"
    changed = tmp_path / "reactive_spike.yaml"
    data = yaml.safe_load(source.read_text())
    assert data["scenario"]["policy"]["target"] != 0.9
    # The deliberate change: a laxer autoscaler target and a different router.
    changed.write_text(source.read_text()
                       + "set:\n  policy.target: 0.9\n  policy.router.kind: round_robin\n")
    assert main(["check", str(changed)]) == 1
    out = capsys.readouterr().out
    assert re.search(r"^FAIL  reactive_spike  \d+ of 7 metrics outside tolerance", out, re.M)
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("scenario"))
    assert lines[header].split() == ["scenario", "class", "metric", "baseline", "now",
                                     "tolerance", "Δ"]
    table = lines[header + 2:lines.index("", header)]
    rows = [line.split() for line in table]
    assert rows and all(row[0] == "reactive_spike" for row in rows)
    assert any(row[1] == "cluster" and row[2] == "gpu_hours" for row in rows)
    baseline = data["baseline"]
    for row in rows:
        assert float(row[3]) == pytest.approx(baseline[row[1]][row[2]]["value"], rel=1e-3)
        assert row[5].startswith("±")
    assert "--update" in out
    # The baseline was recorded from another scenario, and the report says what changed.
    assert "; the scenario changed since the baseline was recorded" in out
    assert re.search(r"^  config: policy changed$", out, re.M)
    assert f"chironsim check {changed} --update" in out


def test_update_round_trips(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    assert main(["check", str(path)]) == 2
    assert "has no 'baseline:' yet" in capsys.readouterr().err

    assert main(["check", str(path), "--update"]) == 0
    out = capsys.readouterr().out
    assert "UPDATED  tiny  7 of 7 values changed" in out and "(new)" in out
    text = path.read_text()
    assert text.startswith(TINY)  # everything before the baseline, comments included, kept
    reg = load_regression(path)
    summary = run(reg.config, reg.base_dir).summary
    pinned = reg.spec.baseline
    assert set(pinned) == {"interactive", "cluster"}
    assert pinned["interactive"]["ttft_p99"].value == summary["ttft_p99"][0]  # exact
    assert pinned["cluster"]["gpu_hours"].value == summary["gpu_hours"][0]
    assert main(["check", str(path)]) == 0
    assert "PASS  tiny  7 metrics within tolerance" in capsys.readouterr().out

    # Move one value 3 % off (outside its 2 % band) and widen another metric's tolerance by
    # hand: check fails, --tolerance-scale 2 lets it pass, --update restores only the value.
    good = pinned["interactive"]["ttft_p50"].value
    off = good * 1.03
    text = text.replace(repr(good), repr(off), 1)
    text = text.replace("tpot_p99:       {value:", "# hand-tuned band\n    tpot_p99:       {value:")
    text = re.sub(r"(tpot_p99: +\{value: [^,]+, abs_tol: )[^,]+", r"\g<1>0.002", text)
    path.write_text(text)
    assert main(["check", str(path)]) == 1
    out = capsys.readouterr().out
    assert re.search(r"tiny +interactive +ttft_p50 .* \(-2\.9%\)", out)
    assert main(["check", str(path), "--tolerance-scale", "2"]) == 0
    capsys.readouterr()
    assert main(["check", str(path), "--update"]) == 0
    out = capsys.readouterr().out
    assert "1 of 7 values changed" in out and "interactive.ttft_p50:" in out and "→" in out
    after = load_regression(path).spec.baseline
    assert after["interactive"]["ttft_p50"].value == good
    assert after["interactive"]["tpot_p99"].abs_tol == 0.002
    assert "# hand-tuned band" in path.read_text() and path.read_text().startswith(TINY)
    assert main(["check", str(path)]) == 0


BAND = "{value: 0.5, abs_tol: 0.01, rel_tol: 0.02}"
L = TINY.count("\n") + 1  # line of the first key added after TINY


@pytest.mark.parametrize(("tail", "message"), [
    ("basline: {}\n", rf"tiny\.yaml:{L}: basline: unknown key; did you mean 'baseline'\?"),
    ("baseline:\n  interactive:\n    ttft_p99: {value: 0.5, tol: 0.1}\n",
     rf"tiny\.yaml:{L + 2}: baseline\.interactive\.ttft_p99\.tol: unknown key.*value, abs_tol, rel_tol"),
    ("baseline:\n  interactive:\n    ttft_p99: {value: 0.5, rel_tol: -0.1}\n",
     rf"tiny\.yaml:{L + 2}: baseline\.interactive\.ttft_p99\.rel_tol: .*greater than or equal to 0"),
    ("baseline:\n  interactive:\n    ttft_p99: {abs_tol: 0.1}\n",
     rf"tiny\.yaml:{L + 2}: baseline\.interactive\.ttft_p99\.value: missing"),
    (f"baseline:\n  interactive:\n    ttft_p98: {BAND}\n",
     rf"tiny\.yaml:{L + 2}: baseline\.interactive\.ttft_p98: unknown per-class metric; did you mean 'ttft_p99'\?"),
    (f"baseline:\n  interactive:\n    gpu_hours: {BAND}\n",
     r"baseline\.interactive\.gpu_hours: .*put it under 'cluster'"),
    (f"baseline:\n  interactiv:\n    ttft_p99: {BAND}\n",
     rf"tiny\.yaml:{L + 1}: baseline\.interactiv: unknown request class; did you mean 'interactive'\?"),
    ("set:\n  cluster.pools.default.instancez: 2\n",
     rf"tiny\.yaml:{L - 1}: cluster\.pools\.default\.instancez: unknown key; did you mean 'instances'"),
    ("scenario:\n  extra_key: 1\n",
     r"tiny\.yaml:.*given twice"),
])
def test_malformed_regression_file_is_exit_2(tail: str, message: str, tmp_path: Path,
                                             capsys: pytest.CaptureFixture,
                                             no_simulation: None) -> None:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY + tail)
    assert main(["check", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    assert re.search(message, err), err


@pytest.mark.parametrize(("text", "message"), [
    ("scenario: missing.yaml\n", r"bad\.yaml:1: scenario: scenario file .*missing\.yaml not found"),
    ("scenario: 3\n", r"bad\.yaml:1: scenario: must be a path to a scenario YAML"),
    ("description: no scenario\n", r"bad\.yaml: scenario: missing: name a scenario YAML"),
    ("scenario: [unclosed\n", r"bad\.yaml:2: not valid YAML"),
    ("- a list\n", r"bad\.yaml: expected a mapping"),
    ("scenario: ../quickstart.yaml\nset:\n  policy.kind: magic\n",
     r"bad\.yaml: its scenario does not validate: .*policy\.kind.*unknown kind 'magic'"),
])
def test_malformed_file_without_a_tiny_scenario(text: str, message: str, tmp_path: Path,
                                                capsys: pytest.CaptureFixture,
                                                no_simulation: None) -> None:
    folder = tmp_path / "regression"
    folder.mkdir()
    shutil.copy(REPO / "configs" / "quickstart.yaml", tmp_path / "quickstart.yaml")
    (folder / "bad.yaml").write_text(text)
    (folder / "good.yaml").write_text(TINY)
    assert main(["check", str(folder)]) == 2  # one bad file stops the run before simulating
    err = capsys.readouterr().err
    assert re.search(message, err), err


def test_bad_paths_and_options(tmp_path: Path, capsys: pytest.CaptureFixture,
                               no_simulation: None) -> None:
    assert main(["check", str(tmp_path / "nope")]) == 2
    assert "regression file or folder not found" in capsys.readouterr().err
    assert main(["check", str(tmp_path)]) == 2
    assert "no regression files" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:
        main(["check", str(tmp_path), "--tolerance-scale", "0"])
    assert stop.value.code == 2
