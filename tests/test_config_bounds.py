"""Bounds at the config boundary: every number that sizes work or memory, TP, result names,
pools that could never serve, and where a config error is located.

Each rejected value must fail validation (before anything is simulated) with its key path and
the allowed range; each value at the edge of a bound, and every shipped config, must pass.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from corpus import case as corpus_case

from chironsim.catalog import get_model, list_gpus
from chironsim.errors import ConfigError
from chironsim.experiments.config import load_config, parse_config
from chironsim.experiments.spec import load_spec
from chironsim.limits import (
    MAX_INSTANCES,
    MAX_TIMESERIES_ROWS,
    MAX_RATE,
    MAX_REQUESTS,
    MAX_SEED,
    MAX_TIME_S,
)
from chironsim.workload.config import SpikeArrivals, StepArrivals
from chironsim.workload.volume import expected_arrivals, mean_rate_segments, time_for

REPO = Path(__file__).resolve().parents[1]
SHARED_TRACES = REPO.parent / "shared" / "traces"

BASE: dict[str, Any] = {
    "name": "bounds",
    "seed": 1,
    "duration_s": 20,
    "classes": {"interactive": {"slo": {"ttft": 2.0}}},
    "workload": {"streams": [{
        "kind": "synthetic", "request_class": "interactive",
        "arrival": {"kind": "poisson", "rate": 2.0},
        "prompt_tokens": {"kind": "fixed", "value": 100},
        "output_tokens": {"kind": "fixed", "value": 20},
        "duration_s": 20,
    }]},
    "cluster": {"model": "llama-3-8b", "gpu": "h100-sxm", "pools": {"default": {"instances": 1}}},
}


def changed(**changes: Any) -> dict[str, Any]:
    """BASE with dotted-key changes (``"workload.streams.0.arrival.rate": 5``)."""
    return corpus_case.changed(BASE, **changes)


def rejected(data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as exc:
        parse_config(data, "scenario.yaml")
    return str(exc.value)


STREAM = "workload.streams.0"
RATE = f"{STREAM}.arrival.rate"


# ----------------------------------------------------------------------------- single numbers


@pytest.mark.parametrize(("key", "value", "fragment"), [
    (RATE, math.inf, "workload.streams[0].arrival.rate: must be at most 100,000 arrivals/s (got inf)"),
    (RATE, "inf", "arrival.rate: must be at most 100,000 arrivals/s (got 'inf')"),
    (RATE, ".inf", "arrival.rate: must be a number"),
    (RATE, math.nan, "arrival.rate: must be greater than 0"),
    (RATE, 1e9, "must be at most 100,000 arrivals/s (got 1000000000.0)"),
    (RATE, 1e-300, "arrival.rate: must be at least 1e-06 arrivals/s"),
    (f"{STREAM}.arrival", {"kind": "gamma", "rate": 1, "cv": 1e6}, "arrival.cv: must be at most 100"),
    (f"{STREAM}.arrival", {"kind": "gamma", "rate": 1, "cv": 1e-300}, "arrival.cv: must be at least 0.001"),
    (f"{STREAM}.arrival", {"kind": "onoff", "rate_on": math.inf, "rate_off": 0, "mean_on_s": 1,
                           "mean_off_s": 1}, "arrival.rate_on: must be at most 100,000 arrivals/s"),
    (f"{STREAM}.arrival", {"kind": "onoff", "rate_on": 1, "rate_off": 1e-9, "mean_on_s": 1,
                           "mean_off_s": 1}, "arrival.rate_off: must be 0 or at least 1e-06 arrivals/s"),
    (f"{STREAM}.arrival", {"kind": "onoff", "rate_on": 1, "rate_off": 0, "mean_on_s": 1e-9,
                           "mean_off_s": 1}, "arrival.mean_on_s: must be at least 0.001 s"),
    (f"{STREAM}.arrival", {"kind": "diurnal", "mean_rate": 1e6, "amplitude": 0.5},
     "arrival.mean_rate: must be at most 100,000 arrivals/s"),
    (f"{STREAM}.arrival", {"kind": "diurnal", "mean_rate": 1, "amplitude": 0.5, "period_s": 1e-12},
     "arrival.period_s: must be at least 0.001 s"),
    (f"{STREAM}.arrival", {"kind": "spike", "base_rate": 1, "spike_rate": math.inf, "start_s": 1,
                           "duration_s": 1}, "arrival.spike_rate: must be at most 100,000"),
    (f"{STREAM}.arrival", {"kind": "spike", "base_rate": 1, "spike_rate": 2, "start_s": 1e12,
                           "duration_s": 1}, "arrival.start_s: must be at most 31,622,400 s"),
    (f"{STREAM}.arrival", {"kind": "step", "rates": [1, math.inf], "times": [0, 5]},
     "arrival.rates[1]: must be at most 100,000 arrivals/s"),
    (f"{STREAM}.num_requests", 10**12, "num_requests: must be at most 50,000,000 requests"),
    (f"{STREAM}.num_requests", "9" * 5000, "num_requests: must be a whole number of a sensible size"),
    (f"{STREAM}.duration_s", 1e30, "workload.streams[0].duration_s: must be at most 31,622,400 s"),
    (f"{STREAM}.start", math.inf, "workload.streams[0].start: must be at most 31,622,400 s"),
    (f"{STREAM}.prompt_tokens.value", 2**63, "prompt_tokens.value: must be at most 10,000,000 tokens"),
    (f"{STREAM}.prompt_tokens.value", 2**64 + 1, "must be at most 10,000,000 tokens"),
    (f"{STREAM}.prompt_tokens.value", 1e30, "prompt_tokens.value: must be at most 10,000,000 tokens"),
    (f"{STREAM}.output_tokens.value", 0, "output_tokens.value: must be greater than or equal to 1"),
    (f"{STREAM}.max_prompt_tokens", 10**20, "max_prompt_tokens: must be at most 10,000,000 tokens"),
    (f"{STREAM}.prompt_tokens", {"kind": "lognormal", "median": 1e30, "sigma": 1},
     "prompt_tokens.median: must be at most 10,000,000 tokens"),
    (f"{STREAM}.prompt_tokens", {"kind": "lognormal", "median": 100, "sigma": 1e6},
     "prompt_tokens.sigma: must be at most 10"),
    (f"{STREAM}.prompt_tokens", {"kind": "uniform", "min": 1, "max": 2**70},
     "prompt_tokens.max: must be at most 10,000,000 tokens"),
    (f"{STREAM}.prompt_tokens", {"kind": "exponential", "mean": math.inf},
     "prompt_tokens.mean: must be at most 10,000,000 tokens"),
    ("duration_s", math.inf, "duration_s: must be at most 31,622,400 s (got inf)"),
    ("drain_s", 1e12, "drain_s: must be at most 31,622,400 s"),
    ("sample_interval_s", 1e-6, "sample_interval_s: must be at least 0.001 s (got 1e-06)"),
    ("seed", 2**63, f"seed: must be at most {MAX_SEED:,}"),
    ("classes.interactive.priority", 10**30, "classes.interactive.priority: must be at most 1,000,000"),
    ("classes.interactive.slo.ttft", math.inf, "classes.interactive.slo.ttft: must be a finite number"),
    ("cluster.pools.default.instances", 1_000_000, "cluster.pools.default.instances: must be at most 10,000 instances"),
    ("cluster.pools.default.max_instances", 10**7, "max_instances: must be at most 10,000 instances"),
    ("cluster.pools.default.min_instances", -1, "min_instances: must be greater than or equal to 0"),
    ("cluster.engine.max_num_seqs", 10**9, "cluster.engine.max_num_seqs: must be at most 65,536 sequences"),
    ("cluster.engine.max_num_batched_tokens", 2**63, "max_num_batched_tokens: must be at most 10,000,000 tokens"),
    ("cluster.engine.block_size", 10**6, "cluster.engine.block_size: must be at most 1,024 tokens"),
    ("cluster.engine.swap_space_gb", math.inf, "cluster.engine.swap_space_gb: must be at most 4,096 GiB"),
    ("cluster.lifecycle.provision_s", 1e9, "cluster.lifecycle.provision_s: must be at most 86,400 s"),
    ("cluster.lifecycle.load_bandwidth_gbps", 1e-12, "load_bandwidth_gbps: must be at least 0.01 GB/s"),
    ("cluster.kv_transfer_gbps", math.inf, "cluster.kv_transfer_gbps: must be at most 100,000 GB/s"),
    ("policy", {"kind": "reactive", "target": 0.5, "interval_s": 1e-9},
     "policy.interval_s: must be at least 0.001 s"),
    ("policy", {"kind": "reactive", "target": 0.5, "max_instances": 10**6},
     "policy.max_instances: must be at most 10,000 instances"),
    ("policy", {"kind": "chiron", "global_interval": 1e-9}, "policy.global_interval: must be at least 0.001 s"),
    ("policy", {"kind": "chiron", "local_interval": math.inf}, "policy.local_interval: must be at most"),
    ("policy", {"kind": "chiron", "b_max_batch": 10**9}, "policy.b_max_batch: must be at most 65,536"),
])
def test_out_of_range_numbers_are_rejected_with_key_and_range(key: str, value: Any, fragment: str) -> None:
    assert fragment in rejected(changed(**{key: value}))


@pytest.mark.parametrize(("key", "value"), [
    (RATE, MAX_RATE / 1000),
    (f"{STREAM}.prompt_tokens.value", 8000),
    ("cluster.pools.default.max_instances", MAX_INSTANCES),
    ("seed", MAX_SEED),
    ("sample_interval_s", 0.001),
    (f"{STREAM}.arrival", {"kind": "onoff", "rate_on": 1, "rate_off": 0, "mean_on_s": 0.001,
                           "mean_off_s": 0.001}),
])
def test_values_at_the_edge_of_a_bound_are_accepted(key: str, value: Any) -> None:
    parse_config(changed(**{key: value}), "scenario.yaml")


def test_pool_default_cap_is_the_per_pool_bound() -> None:
    config = parse_config(BASE)
    assert config.cluster.pools["default"].max_instances == MAX_INSTANCES


# ----------------------------------------------------------------------------- combined sizes


def test_rate_times_duration_is_bounded_per_stream() -> None:
    err = rejected(changed(**{RATE: 90_000, f"{STREAM}.duration_s": 3600, "duration_s": None}))
    assert "workload.streams[0]: expects about 324,000,000 requests" in err
    assert f"at most {MAX_REQUESTS:,} per stream" in err


def test_scenario_window_cuts_the_expected_volume() -> None:
    # the stream alone would ask for 324M requests, but the 20 s window keeps 1.8M of them
    parse_config(changed(**{RATE: 90_000, f"{STREAM}.duration_s": 3600}))


def test_num_requests_at_a_tiny_rate_would_run_for_centuries() -> None:
    data = changed(**{RATE: 1e-5, f"{STREAM}.num_requests": 1000, "duration_s": None})
    del data["workload"]["streams"][0]["duration_s"]
    err = rejected(data)
    assert "workload.streams[0]: num_requests 1,000 at its arrival rate take about 1e+08 s" in err


def test_sample_count_is_bounded_over_the_known_run() -> None:
    err = rejected(changed(duration_s=MAX_TIME_S / 2, sample_interval_s=0.5,
                           **{f"{STREAM}.duration_s": 100}))
    assert "sample_interval_s: 31,623,600 timeseries samples per pool" in err
    assert f"at most {MAX_TIMESERIES_ROWS:,}" in err


def test_sample_rows_are_bounded_over_all_pools() -> None:
    data = changed(duration_s=86_400 * 7, **{f"{STREAM}.duration_s": 100})
    data["cluster"]["pools"] = {name: {"instances": 1} for name in ("a", "b", "c")}
    parse_config(data)  # a week sampled every second in three pools: 1.8M rows
    data["cluster"]["pools"]["d"] = {"instances": 1}
    err = rejected(data)
    assert "duration_s: 605,400 timeseries samples per pool" in err
    assert f"at most {MAX_TIMESERIES_ROWS // 4:,} ({MAX_TIMESERIES_ROWS:,} rows over 4 pools)" in err


def test_policy_tick_count_is_bounded_over_the_known_run() -> None:
    err = rejected(changed(duration_s=86_400 * 30, **{
        "policy": {"kind": "reactive", "target": 0.5, "interval_s": 0.01},
        f"{STREAM}.duration_s": 100}))
    assert "policy.interval_s: 259,260,000 policy ticks" in err


def test_onoff_switch_count_is_bounded() -> None:
    err = rejected(changed(duration_s=None, sample_interval_s=10, **{
        f"{STREAM}.arrival": {"kind": "onoff", "rate_on": 1, "rate_off": 0, "mean_on_s": 0.001,
                              "mean_off_s": 0.001},
        f"{STREAM}.duration_s": 86_400 * 30}))
    assert "workload.streams[0].arrival: on/off periods" in err and "switches" in err


def test_expected_volume_of_piecewise_arrivals_is_exact() -> None:
    spike = mean_rate_segments(SpikeArrivals(base_rate=0, spike_rate=10, start_s=5, duration_s=2))
    assert expected_arrivals(spike, 100) == pytest.approx(20)
    assert time_for(spike, 10) == pytest.approx(6)
    assert time_for(spike, 1000) == pytest.approx(7)  # the stream runs out at the spike's end
    step = mean_rate_segments(StepArrivals(rates=[2, 0, 4], times=[0, 10, 20]))
    assert expected_arrivals(step, 25) == pytest.approx(40)
    assert time_for(step, 30) == pytest.approx(22.5)


# ----------------------------------------------------------------------------- tensor parallelism


@pytest.mark.parametrize(("tp", "why"), [
    (3, "it must divide Llama-3-8B's 32 attention heads"),
    (16, "one H100-SXM node holds 8 GPUs"),
    (1024, "one H100-SXM node holds 8 GPUs"),
    (2**70, "one H100-SXM node holds 8 GPUs"),
])
def test_impossible_tp_is_rejected_with_allowed_values(tp: int, why: str) -> None:
    err = rejected(changed(**{"cluster.pools.default.tp": tp}))
    assert "cluster.pools.default.tp: tensor-parallel degree" in err
    assert why in err and "allowed on H100-SXM: 1, 2, 4, 8" in err


def test_tp_must_split_the_kv_heads_evenly() -> None:
    qwen = get_model("qwen2.5-7b")  # 28 attention heads, 4 KV heads
    assert qwen.tp_degrees(8) == [1, 2, 4]
    err = rejected(changed(**{"cluster.model": "qwen2.5-7b", "cluster.pools.default.tp": 7}))
    assert "KV heads must split evenly" in err and "allowed on H100-SXM: 1, 2, 4" in err


@pytest.mark.parametrize("tp", [1, 2, 4, 8])
def test_power_of_two_tp_within_a_node_is_accepted(tp: int) -> None:
    parse_config(changed(**{"cluster.pools.default.tp": tp}))


def test_every_gpu_says_how_many_fit_in_one_node_and_where_that_comes_from() -> None:
    for gpu in list_gpus():
        assert gpu.gpus_per_node >= 1, gpu.name
        assert len(gpu.node_source) > 10, gpu.name


# ----------------------------------------------------------------------------- result names


@pytest.mark.parametrize(("name", "fragment"), [
    ("../x", "name: must not contain a path separator"),
    ("a/b", "name: must not contain a path separator"),
    ("a\\b", "name: must not contain a path separator"),
    ("", "name: must not be empty"),
    (".", "name: must not be '.'"),
    ("..", "name: must not be '..'"),
    (".hidden", "name: must not start with '.'"),
    ("x" * 101, "name: must be at most 100 characters"),
    ("a b", "name: may use only letters, digits"),
    ("-rf", "name: may use only letters, digits"),
    ("a\nb", "name: may use only letters, digits"),
])
def test_unsafe_result_names_are_rejected(name: str, fragment: str) -> None:
    assert fragment in rejected(changed(name=name))


@pytest.mark.parametrize("name", ["quickstart", "chiron-70b", "load=1.5,seed=2", "run_3.v2", "x" * 100])
def test_ordinary_result_names_are_accepted(name: str) -> None:
    assert parse_config(changed(name=name)).name == name


# ----------------------------------------------------------------------------- pools that never serve


def test_static_pools_that_start_empty_are_an_error() -> None:
    err = rejected(changed(**{"cluster.pools.default.instances": 0}))
    assert ("cluster.pools.default.instances: class 'interactive' (workload.streams[0]) would "
            "never be served") in err
    assert "policy 'static' never adds instances" in err


def test_an_empty_pool_is_fine_when_another_serves_the_class() -> None:
    parse_config(changed(**{"cluster.pools": {"default": {"instances": 1},
                                              "spare": {"instances": 0}}}))


def test_autoscalers_may_start_from_zero() -> None:
    parse_config(changed(**{"cluster.pools.default.instances": 0,
                            "policy": {"kind": "reactive", "target": 0.5, "min_instances": 0}}))


def test_an_autoscaled_pool_capped_at_zero_is_an_error() -> None:
    err = rejected(changed(**{"cluster.pools.default": {"instances": 0, "max_instances": 0},
                              "policy": {"kind": "reactive", "target": 0.5, "min_instances": 0}}))
    assert "would never be served" in err and "max_instances" in err


def test_chiron_without_global_scaling_never_adds_instances() -> None:
    data = changed(**{
        "classes": {"interactive": {}, "batch": {}},
        "cluster.pools": {"interactive": {"instances": 0, "classes": ["interactive"]},
                          "mixed": {"instances": 1, "classes": ["batch"]},
                          "batch": {"instances": 1, "classes": ["batch"]}},
        "policy": {"kind": "chiron", "global_scaling": False}})
    assert "cluster.pools.interactive.instances: class 'interactive'" in rejected(data)
    data["policy"]["global_scaling"] = True
    parse_config(data)


# ----------------------------------------------------------------------------- error locations


def write(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "scenario.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def load_error(path: Path, *overrides: str) -> str:
    with pytest.raises(ConfigError) as exc:
        load_config(path, list(overrides))
    return str(exc.value)


TEXT = yaml.safe_dump(BASE, sort_keys=False)


LITERAL = """\
name: bounds
seed: 1
duration_s: 20
classes:
  interactive:
    slo: {ttft: 2.0}
workload:
  streams:
    - kind: synthetic
      request_class: interactive
      arrival: {kind: poisson, rate: 2.0}
      prompt_tokens: {kind: fixed, value: 100}
      output_tokens: {kind: fixed, value: 20}
      duration_s: 20
cluster:
  model: llama-3-8b
  pools:
    default: {instances: 1}
"""


def test_unbalanced_quote_is_reported_at_its_opening_line(tmp_path: Path) -> None:
    text = LITERAL.replace("  model: llama-3-8b", '  model: "llama-3-8b')
    assert text.splitlines()[15] == '  model: "llama-3-8b'  # line 16 of 18
    err = load_error(write(tmp_path, text))
    assert f"{tmp_path / 'scenario.yaml'}:16: not valid YAML" in err
    assert "closing quote missing" in err


def test_quote_closed_by_a_later_quote_is_still_blamed_on_its_opening_line(tmp_path: Path) -> None:
    text = 'name: "bounds\nseed: 1\nduration_s: 20\nworkload: {streams: []}\ncluster: {gpu: "a"}\n'
    err = load_error(write(tmp_path, text))
    assert ":1: not valid YAML" in err and "opened on line 1" in err


def test_bad_byte_is_reported_at_its_line(tmp_path: Path) -> None:
    raw = TEXT.encode().splitlines(keepends=True)
    raw[4] = raw[4].rstrip(b"\n") + b"  # caf\xe9\n"  # line 5
    err = load_error(write(tmp_path, b"".join(raw)))
    assert f"{tmp_path / 'scenario.yaml'}:5: not valid UTF-8 (byte 0xe9" in err


def test_control_character_is_reported_at_its_line(tmp_path: Path) -> None:
    lines = TEXT.splitlines()
    lines[3] += " \x01"
    assert ":4: not valid YAML (character '\\x01'" in load_error(write(tmp_path, "\n".join(lines)))


def test_set_through_a_scalar_is_blamed_on_the_set(tmp_path: Path) -> None:
    err = load_error(write(tmp_path, TEXT), "seed.foo=1")
    assert err.startswith("--set seed.foo=1: seed: must be a whole number"), err


def test_problem_at_a_key_the_set_passed_through_names_file_and_set(tmp_path: Path) -> None:
    path = write(tmp_path, TEXT)
    err = load_error(path, "cluster.pools.default.max_instances=0")
    line = next(i for i, text in enumerate(TEXT.splitlines(), 1) if text.strip() == "default:")
    assert err.startswith(f"{path}:{line} (with --set cluster.pools.default.max_instances=0): "
                          "cluster.pools.default: instances (1) must not exceed"), err


def test_set_through_a_scalar_list_entry_is_blamed_on_the_set(tmp_path: Path) -> None:
    err = load_error(write(tmp_path, TEXT.replace("  streams:\n", "  streams: [1.5]\n  old:\n")),
                     "workload.streams[0].arrival.rate=3")
    assert "--set workload.streams[0].arrival.rate=3: workload.streams[0]: needs a 'kind'" in err


def test_list_or_mapping_as_a_key_is_a_located_error(tmp_path: Path) -> None:
    err = load_error(write(tmp_path, TEXT + "[1, 2]: x\n"))
    assert f":{len(TEXT.splitlines()) + 1}: a key must be a plain name, not a list" in err


def test_yaml_alias_bomb_fails_fast(tmp_path: Path) -> None:
    anchors = ['l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    anchors += [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, 10)]
    text = TEXT.replace("  pools:\n    default:\n      instances: 1\n",
                        "  pools:\n    default:\n      instances: 1\n      classes: *l9\n")
    assert "*l9" in text
    started = time.perf_counter()
    err = load_error(write(tmp_path, "\n".join(anchors) + "\n" + text))
    assert time.perf_counter() - started < 10
    assert "cluster.pools.default.classes[0]: must be a string" in err


# ----------------------------------------------------------------------------- shipped configs


@pytest.mark.parametrize("path", [*sorted((REPO / "configs").glob("*.yaml")),
                                  *sorted((REPO / "experiments" / "chiron" / "configs").glob("*.yaml"))],
                         ids=lambda p: p.name)
def test_every_shipped_scenario_still_validates(path: Path) -> None:
    if "shared/traces" in path.read_text() and not SHARED_TRACES.is_dir():
        pytest.skip(f"{path.name} replays a trace from ../shared/traces, absent here")
    load_config(path)


def test_shipped_sweep_spec_still_validates() -> None:
    load_spec(REPO / "experiments" / "sweeps" / "quickstart_policies.yaml")


def test_a_trace_driven_run_longer_than_its_sample_bound_stops_cleanly(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A trace sets the run's length, so the sample bound is enforced while running: the run
    stops with an error naming the file and the key, and writes nothing."""
    import chironsim.sim.world as world
    from chironsim.cli import main

    monkeypatch.setattr(world, "MAX_TIMESERIES_ROWS", 100)
    (tmp_path / "trace.csv").write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 18:15:46.6805900,100,10\n"
        "2023-11-16 18:25:46.6805900,100,10\n")  # ten minutes later: 600 samples at 1 s
    data = changed(**{"workload.streams.0": {"kind": "trace", "format": "azure",
                                             "path": "trace.csv", "request_class": "interactive"}})
    data.pop("duration_s", None)
    (tmp_path / "scenario.yaml").write_text(yaml.safe_dump(data))
    code = main(["run", str(tmp_path / "scenario.yaml"), "--quiet", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith(f"error: {tmp_path / 'scenario.yaml'}: more than 100 timeseries samples "
                          "per pool (sample_interval_s = 1 s"), err
    assert "raise the interval or set duration_s" in err
    assert not (tmp_path / "out").exists()
    monkeypatch.setattr(world, "MAX_TIMESERIES_ROWS", 1000)
    assert main(["run", str(tmp_path / "scenario.yaml"), "--quiet", "--no-plots",
                 "--out", str(tmp_path / "out")]) == 0


# ----------------------------------------------------------------------------- precision


@pytest.mark.parametrize("gpu", ["a100", "a100-40gb", "a10", "a10g"])
def test_fp8_weights_need_a_gpu_with_fp8(gpu: str) -> None:
    model = "qwen2.5-7b" if gpu.startswith("a10") and not gpu.startswith("a100") else "llama-3-8b"
    err = rejected(changed(**{"cluster.gpu": gpu, "cluster.model": model, "cluster.pools.default.dtype": "fp8"}))
    assert "cluster.pools.default.dtype: dtype fp8 needs FP8 tensor cores" in err and "fp8_tflops is null" in err


@pytest.mark.parametrize("gpu", ["a100", "h100-sxm", "l40s", "mi300x"])
def test_an_fp8_kv_cache_is_accepted_on_every_gpu(gpu: str) -> None:
    parse_config(changed(**{"cluster.gpu": gpu, "cluster.kv_cache_dtype": "fp8"}), "scenario.yaml")


def test_fp8_weights_let_a_model_fit_that_bf16_does_not() -> None:
    big = {"cluster.gpu": "h200", "cluster.model": "llama-3-70b"}
    assert "does not fit on 1 x H200" in rejected(changed(**big))
    parse_config(changed(**big, **{"cluster.pools.default.dtype": "fp8"}), "scenario.yaml")
