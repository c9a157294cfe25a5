"""The ``chironsim`` command on bad input: one readable ``error:`` block, exit status 2.

Every case runs the real CLI (``chironsim.cli.main``, two of them in a subprocess) and checks
that the message names the file and line or the config key and says what was expected, that
there is no traceback, and that no results folder is written.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pydantic
import pytest
import yaml

from chironsim.cli import main
from chironsim.errors import ConfigError
from chironsim.experiments.config import ScenarioConfig, parse_config
from chironsim.metrics.store import is_result_dir
from scenarios import light_scenario

REPO = Path(__file__).resolve().parents[1]
SHARED_TRACES = REPO.parent / "shared" / "traces"

BASE: dict[str, Any] = light_scenario("cli-test", seed=1, duration_s=20,
                                      output={"plots": False, "format": "csv"})


def scenario(**changes: Any) -> dict[str, Any]:
    """BASE with dotted-key changes applied, e.g. ``scenario(**{"cluster.gpu": "a10g"})``."""
    data = copy.deepcopy(BASE)
    for key, value in changes.items():
        node: Any = data
        *parents, last = key.split(".")
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        node[int(last) if isinstance(node, list) else last] = value
    return data


def write(tmp_path: Path, data: dict[str, Any] | str, name: str = "scenario.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


def line_of(path: Path, needle: str) -> int:
    """1-based number of the first line of ``path`` containing ``needle``."""
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if needle in line:
            return number
    raise AssertionError(f"{needle!r} not in {path}")


def run_cli(capsys: pytest.CaptureFixture[str], config: Path, *extra: str,
            out: Path | None = None) -> tuple[int, str, str]:
    out = out if out is not None else config.parent / "results"
    code = main(["run", str(config), "--quiet", "--out", str(out), *extra])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_user_error(code: int, err: str, *fragments: str) -> None:
    assert code == 2, err
    assert err.startswith("error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, f"{fragment!r} not in:\n{err}"


def assert_nothing_written(folder: Path) -> None:
    """No results folder, and no hidden temporary sibling the store would have left behind."""
    assert not folder.exists()
    assert not list(folder.parent.glob(f".{folder.name}.*"))


# ----------------------------------------------------------------------------- help


def test_help_and_run_help_exit_zero(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--help"], ["run", "--help"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 0
        assert "usage: chironsim" in capsys.readouterr().out


# ----------------------------------------------------------------------------- schema


@pytest.mark.parametrize(("changes", "needle", "fragments"), [
    pytest.param({"durration_s": 3}, "durration_s:",
                 ["durration_s: unknown key; did you mean 'duration_s'", "expected one of: classes"],
                 id="unknown-top-level-key"),
    pytest.param({"cluster.pools.default.instancs": 2}, "instancs:",
                 ["cluster.pools.default.instancs: unknown key; did you mean 'instances'"],
                 id="unknown-nested-key"),
    pytest.param({"duration_s": "ten"}, "duration_s: ten",
                 ["duration_s: must be a number (got 'ten')"], id="wrong-type"),
    pytest.param({"workload.streams.0.arrival.rate": -1.5}, "rate: -1.5",
                 ["workload.streams[0].arrival.rate: must be greater than 0 (got -1.5)"],
                 id="negative-rate"),
    pytest.param({"workload.streams.0.arrival.kind": "poison"}, "kind: poison",
                 ["workload.streams[0].arrival.kind: unknown kind 'poison'; did you mean 'poisson'?",
                  "expected one of: poisson, gamma"], id="unknown-arrival-kind"),
    pytest.param({"workload.streams.0.request_class": "batchy"}, "request_class: batchy",
                 ["workload.streams[0].request_class: class 'batchy' is not declared under "
                  "'classes' (declared: interactive)"], id="undeclared-class"),
    pytest.param({"workload.streams": []}, "streams: []",
                 ["workload.streams: needs at least 1 entry (got 0)"], id="no-streams"),
    pytest.param({"cluster.pools.default.max_instances": 0}, "default:",
                 ["cluster.pools.default: instances (1) must not exceed max_instances (0)"],
                 id="instances-above-cap"),
    pytest.param({"output.format": "xlsx"}, "format: xlsx",
                 ["output.format: must be 'parquet' or 'csv' (got 'xlsx')"], id="bad-choice"),
])
def test_schema_errors_name_file_line_and_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], changes: dict[str, Any], needle: str,
    fragments: list[str],
) -> None:
    config = write(tmp_path, scenario(**changes))
    code, _, err = run_cli(capsys, config)
    assert_user_error(code, err, f"error: {config}:{line_of(config, needle)}: ", *fragments)
    # pydantic's union-member names (workload.streams.0.synthetic.arrival.poisson) never leak
    assert ".0." not in err and "synthetic." not in err and "Input should" not in err
    assert err.count("\n") == 1  # one problem, one line
    assert_nothing_written(tmp_path / "results")


def test_several_problems_are_listed_together(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write(tmp_path, scenario(seed=-1, drain_s="long"))
    code, _, err = run_cli(capsys, config)
    assert_user_error(code, err, f"error: {config}: 2 problems in the configuration",
                      f"{config}:{line_of(config, 'seed:')}: seed: must be greater than or equal to 0",
                      f"{config}:{line_of(config, 'drain_s:')}: drain_s: must be a number")


def test_cross_references_are_still_checked_without_the_cli() -> None:
    """parse_config reports class errors by key; building the model directly still refuses them."""
    data = scenario(**{"workload.streams.0.request_class": "batchy"})
    with pytest.raises(pydantic.ValidationError, match=r"workload\.streams\[0\]\.request_class"):
        ScenarioConfig.model_validate(data)
    with pytest.raises(ConfigError, match=r"^<test>: workload\.streams\[0\]\.request_class: class 'batchy'"):
        parse_config(data, "<test>")


# ----------------------------------------------------------------------------- names and files


@pytest.mark.parametrize(("changes", "key", "suggestion"), [
    ({"cluster.gpu": "h100-sxn"}, "cluster.gpu: unknown GPU 'h100-sxn'", "did you mean h100-sxm"),
    ({"cluster.model": "lama-3-8b"}, "cluster.model: unknown model 'lama-3-8b'", "did you mean llama-3-8b"),
    ({"cluster.pools.default.gpu": "a10gx"}, "cluster.pools.default.gpu: unknown GPU 'a10gx'", "did you mean a10g"),
])
def test_unknown_catalog_names_suggest_close_matches(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], changes: dict[str, Any], key: str,
    suggestion: str,
) -> None:
    config = write(tmp_path, scenario(**changes))
    code, _, err = run_cli(capsys, config)
    assert_user_error(code, err, key, suggestion, "known: ")
    assert_nothing_written(tmp_path / "results")


def test_model_that_does_not_fit_fails_at_validation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    data = scenario(**{"cluster.model": "llama-3-70b", "cluster.gpu": "a10g"})
    with pytest.raises(ConfigError, match=r"^<test>: cluster\.pools\.default: Llama-3-70B does not fit "
                                          r"on 1 x A10G.*use more GPUs \(tp\) or a larger GPU"):
        parse_config(data, "<test>")  # nothing is simulated: the check is part of validation
    config = write(tmp_path, data)
    code, _, err = run_cli(capsys, config)
    assert_user_error(code, err, f"{config}:{line_of(config, 'default:')}: cluster.pools.default: ",
                      "does not fit on 1 x A10G")
    assert_nothing_written(tmp_path / "results")


def test_pool_with_enough_gpus_fits(tmp_path: Path) -> None:
    """The fit check uses the pool's tp: the same model on 8 x A10G validates."""
    data = scenario(**{"cluster.model": "llama-3-70b", "cluster.gpu": "a10g",
                       "cluster.pools.default.tp": 8})
    assert parse_config(data, "<test>").cluster.pools["default"].tp == 8


def test_missing_trace_file_names_key_and_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stream = {"kind": "trace", "format": "azure", "path": "nope.csv", "request_class": "interactive"}
    config = write(tmp_path, scenario(**{"workload.streams.0": stream}))
    code, _, err = run_cli(capsys, config)
    assert_user_error(code, err, "workload.streams[0].path: trace file ",
                      str(tmp_path / "nope.csv"), "does not exist")
    assert_nothing_written(tmp_path / "results")


# ----------------------------------------------------------------------------- --set


@pytest.mark.parametrize(("item", "fragments"), [
    ("seed", ["--set 'seed': expected KEY=VALUE"]),
    ("cluster.pools.default.instancs=3",
     ["--set cluster.pools.default.instancs=3: cluster.pools.default.instancs: unknown key; "
      "did you mean 'instances'"]),
    ("workload.streams[0].arrival.rate=-1",
     ["--set workload.streams[0].arrival.rate=-1: workload.streams[0].arrival.rate: "
      "must be greater than 0 (got -1)"]),
    ("workload.streams.3.duration_s=5",
     ["--set workload.streams.3.duration_s=5: workload.streams has 1 entry; index 3 is out of range"]),
    ("workload.streams.first.duration_s=5", ["workload.streams is a list; 'first' must be an index"]),
    ("name=[1", ["--set name=[1: the value is not valid YAML"]),
    ("cluster..gpu=a10g", ["'cluster..gpu' is not a dotted key path"]),
])
def test_bad_set_overrides(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], item: str, fragments: list[str],
) -> None:
    config = write(tmp_path, BASE)
    code, _, err = run_cli(capsys, config, "--set", item)
    assert_user_error(code, err, *fragments)
    assert_nothing_written(tmp_path / "results")


def test_negative_seed_is_an_argument_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write(tmp_path, BASE)
    with pytest.raises(SystemExit) as exc:
        main(["run", str(config), "--seed", "-3", "--quiet"])
    assert exc.value.code == 2
    assert "argument --seed: must be 0 or more, got -3" in capsys.readouterr().err


# ----------------------------------------------------------------------------- the YAML file


def test_invalid_yaml_names_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write(tmp_path, "name: x\nseed: 1\nworkload:\n  streams: [\n   - kind: synthetic\n")
    code, _, err = run_cli(capsys, config)
    assert_user_error(code, err, f"error: {config}:5: not valid YAML (")


def test_duplicate_yaml_key_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = yaml.safe_dump(BASE, sort_keys=False) + "seed: 7\n"
    config = write(tmp_path, text)
    code, _, err = run_cli(capsys, config)
    last = len(text.splitlines())
    assert_user_error(code, err, f"error: {config}:{last}: key 'seed' is given twice "
                                 f"(first on line {line_of(config, 'seed:')})")


@pytest.mark.parametrize(("make", "fragment"), [
    (lambda tmp: tmp / "missing.yaml", "config file not found"),
    (lambda tmp: tmp, "is not a file; expected a scenario YAML file"),
    (lambda tmp: write(tmp, "- a\n- b\n"), "expected a mapping of config keys, got list"),
])
def test_config_file_problems(tmp_path: Path, capsys: pytest.CaptureFixture[str], make: Any,
                              fragment: str) -> None:
    config = make(tmp_path)
    code, _, err = run_cli(capsys, config, out=tmp_path / "results")
    assert_user_error(code, err, f"error: {config}: {fragment}")


# ----------------------------------------------------------------------------- output folder


def test_output_folder_that_is_not_a_results_folder_is_refused_before_running(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    import chironsim.experiments.runner as runner

    def must_not_run(*_args: Any, **_kwargs: Any) -> None:
        raise AssertionError("the scenario ran although --out is unusable")

    monkeypatch.setattr(runner, "run", must_not_run)
    out = tmp_path / "notes"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code, _, err = run_cli(capsys, write(tmp_path, BASE), out=out)
    assert_user_error(code, err, f"{out}: folder exists and is not a chironsim result folder; "
                                 "refusing to replace it")
    assert [p.name for p in out.iterdir()] == ["keep.txt"]

    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    code, _, err = run_cli(capsys, write(tmp_path, BASE), out=blocker / "results")
    assert_user_error(code, err, f"cannot create the results folder, {blocker} is a file")


# ----------------------------------------------------------------------------- malformed trace


def azure_trace(path: Path, rows: int = 30, bad_line: int | None = None) -> Path:
    """An Azure-format CSV, one request a second; ``bad_line`` (1-based, header = 1) gets a word."""
    lines = ["TIMESTAMP,ContextTokens,GeneratedTokens"]
    for i in range(rows):
        lines.append(f"2000-01-01 00:00:{i:02d}.0000000,{200 + 7 * i},{10 + i}")
    if bad_line is not None:
        lines[bad_line - 1] = lines[bad_line - 1].rsplit(",", 1)[0] + ",lots"
    path.write_text("\n".join(lines) + "\n")
    return path


def trace_scenario(trace: Path) -> dict[str, Any]:
    stream = {"kind": "trace", "format": "azure", "path": trace.name, "request_class": "interactive"}
    return scenario(**{"workload.streams.0": stream, "duration_s": None})


def test_good_trace_runs_and_writes_results(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The control for the malformed-trace test: the same scenario with a clean trace succeeds."""
    config = write(tmp_path, trace_scenario(azure_trace(tmp_path / "good.csv")))
    code, out, err = run_cli(capsys, config)
    assert code == 0, err
    assert "30 requests" in out
    assert is_result_dir(tmp_path / "results")


def test_malformed_trace_line_found_while_streaming(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    trace = azure_trace(tmp_path / "bad.csv", bad_line=5)
    config = write(tmp_path, trace_scenario(trace))
    code, _, err = run_cli(capsys, config)
    assert_user_error(code, err, f"error: {trace}:5: ", "GeneratedTokens", "'lots'")
    assert_nothing_written(tmp_path / "results")


# ----------------------------------------------------------------------------- subprocesses


def run_module(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "chironsim.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def test_subprocess_config_error_exits_2_without_traceback(tmp_path: Path) -> None:
    config = write(tmp_path, scenario(**{"cluster.pools.default.instancs": 2}))
    proc = run_module("run", str(config), "--quiet", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith(f"error: {config}:")
    assert "cluster.pools.default.instancs: unknown key" in proc.stderr
    assert proc.stdout == ""
    assert not (tmp_path / "results").exists()  # the default results/<name> was not created


def test_subprocess_malformed_trace_exits_2_without_traceback(tmp_path: Path) -> None:
    trace = azure_trace(tmp_path / "bad.csv", bad_line=5)
    config = write(tmp_path, trace_scenario(trace))
    proc = run_module("run", str(config), "--quiet", "--out", "out", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert f"{trace}:5: " in proc.stderr
    assert_nothing_written(tmp_path / "out")


def test_console_script_help() -> None:
    script = Path(sys.executable).parent / "chironsim"
    if not script.is_file():
        pytest.skip("the chironsim console script is not installed beside this Python")
    proc = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    assert "run" in proc.stdout and "calibrate" in proc.stdout


# ----------------------------------------------------------------------------- traces, calibrate


def test_traces_stats_on_real_azure_trace(capsys: pytest.CaptureFixture[str]) -> None:
    trace = SHARED_TRACES / "azure_llm_2023_conv.csv"
    if not trace.is_file():
        pytest.skip(f"real traces not present (expected {trace})")
    assert main(["traces", "stats", str(trace)]) == 0
    stats = dict(line.split(None, 1) for line in capsys.readouterr().out.splitlines())
    assert int(stats["rows"]) > 1000
    assert float(stats["rate_rps"]) > 0


def test_traces_stats_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["traces", "stats", str(tmp_path / "nope.csv")])
    assert_user_error(code, capsys.readouterr().err, f"{tmp_path / 'nope.csv'}: trace file not found")


def test_traces_stats_malformed_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trace = azure_trace(tmp_path / "bad.csv", bad_line=5)
    code = main(["traces", "stats", str(trace)])
    assert_user_error(code, capsys.readouterr().err, f"error: {trace}:5: ")


def vidur_profile(path: Path, bad_line: int) -> Path:
    """A Vidur mlp.csv profile (Llama-3-8B shapes, tp 1) with a word in a time column."""
    ops = ("attn_pre_proj", "attn_post_proj", "mlp_up_proj", "mlp_down_proj")
    header = ["n_head", "n_kv_head", "n_embd", "n_expanded_embd", "vocab_size", "num_tokens",
              "num_tensor_parallel_workers", *(f"time_stats.{op}.median" for op in ops)]
    lines = [",".join(header)]
    for tokens in (1, 2, 4, 8, 16, 32):
        lines.append(",".join(["32", "8", "4096", "14336", "128256", str(tokens), "1",
                               "0.011", "0.009", "0.021", "0.017"]))
    cells = lines[bad_line - 1].split(",")
    cells[8] = "fast"
    lines[bad_line - 1] = ",".join(cells)
    path.write_text("\n".join(lines) + "\n")
    return path


def test_calibrate_malformed_profile(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    profile = vidur_profile(tmp_path / "a100_Meta-Llama-3-8B_mlp.csv", bad_line=5)
    code = main(["calibrate", str(profile)])
    assert_user_error(code, capsys.readouterr().err,
                      f"error: {profile}:5: column 'time_stats.attn_post_proj.median'", "'fast'")


def test_calibrate_unknown_gpu(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    profile = vidur_profile(tmp_path / "a100_Meta-Llama-3-8B_mlp.csv", bad_line=5)
    code = main(["calibrate", str(profile), "--gpu", "h100-sxn"])
    assert_user_error(code, capsys.readouterr().err, "error: --gpu: unknown GPU 'h100-sxn'",
                      "did you mean h100-sxm")
