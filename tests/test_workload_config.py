"""Workload config validation: good configs of every kind parse, mistakes name their field."""

from __future__ import annotations

import pytest
import yaml
from pydantic import ValidationError

from chironsim.workload.config import (
    BatchStream,
    DiurnalArrivals,
    EmpiricalLength,
    LognormalLength,
    SyntheticStream,
    TraceStream,
    WorkloadConfig,
)

EXAMPLE = """
streams:
  - kind: trace
    format: azure
    path: traces/azure_conv_sample.csv
    request_class: interactive
    time_window: [600, 1200]
    rate_scale: 2.0
    start: 10
    max_prompt_tokens: 8192
    max_output_tokens: 1024
    limit: 5000
    deadline: 30
  - kind: trace
    format: csv
    path: my_trace.csv
    columns: {arrival: t_ms, prompt_tokens: in, output_tokens: out, arrival_unit: ms}
  - kind: synthetic
    request_class: interactive
    arrival: {kind: gamma, rate: 5.5, cv: 1.1}
    prompt_tokens: {kind: lognormal, median: 760, sigma: 0.985}
    output_tokens: {kind: lognormal, mean: 211, sigma: 0.86}
    max_prompt_tokens: 14050
    max_output_tokens: 1000
    duration_s: 3600
  - kind: synthetic
    arrival: {kind: diurnal, mean_rate: 3, amplitude: 0.5, period_s: 86400, phase: 0}
    prompt_tokens: {kind: empirical, path: vidur.csv, format: splitwise, joint: true}
    num_requests: 1000
  - kind: synthetic
    arrival: {kind: onoff, rate_on: 20, rate_off: 0, mean_on_s: 5, mean_off_s: 30}
    prompt_tokens: {kind: zipf, a: 1.2, min: 16, max: 4096}
    output_tokens: {kind: uniform, min: 10, max: 500}
    duration_s: 600
  - kind: synthetic
    arrival: {kind: spike, base_rate: 1, spike_rate: 50, start_s: 100, duration_s: 20}
    prompt_tokens: {kind: fixed, value: 512}
    output_tokens: {kind: exponential, mean: 200}
    duration_s: 300
  - kind: synthetic
    arrival: {kind: step, rates: [1, 5, 0.5], times: [0, 60, 120]}
    prompt_tokens: {kind: fixed, value: 128}
    output_tokens: {kind: fixed, value: 64}
    duration_s: 180
  - kind: batch
    num_requests: 2000
    submit_at: 300
    window_s: 60
    deadline_s: 3600
    prompt_tokens: {kind: empirical, path: vidur.csv, format: splitwise, column: prompt}
    output_tokens: {kind: empirical, path: vidur.csv, format: splitwise}
"""


def test_example_with_every_kind_validates() -> None:
    config = WorkloadConfig.model_validate(yaml.safe_load(EXAMPLE))
    kinds = [type(s) for s in config.streams]
    assert kinds == [TraceStream] * 2 + [SyntheticStream] * 5 + [BatchStream]
    assert config.streams[0].time_window == (600.0, 1200.0)
    assert config.streams[7].request_class == "batch"
    assert isinstance(config.streams[3].arrival, DiurnalArrivals)


def test_lognormal_mean_and_median_give_the_same_mu() -> None:
    by_median = LognormalLength(median=100.0, sigma=0.5)
    by_mean = LognormalLength(mean=100.0 * 2.718281828459045 ** (0.5**2 / 2), sigma=0.5)
    assert by_mean.mu == pytest.approx(by_median.mu)


def _stream(**overrides: object) -> dict:
    stream = {
        "kind": "synthetic",
        "arrival": {"kind": "poisson", "rate": 1.0},
        "prompt_tokens": {"kind": "fixed", "value": 10},
        "output_tokens": {"kind": "fixed", "value": 10},
        "duration_s": 10,
    }
    stream.update(overrides)
    return stream


@pytest.mark.parametrize(
    ("stream", "field"),
    [
        (_stream(arrival={"kind": "poisson", "rate": 0}), "rate"),
        (_stream(arrival={"kind": "gamma", "rate": 1, "cv": 0}), "cv"),
        (_stream(arrival={"kind": "gamma", "rate": -1, "cv": 1}), "rate"),
        (_stream(arrival={"kind": "diurnal", "mean_rate": 1, "amplitude": 1.0}), "amplitude"),
        (_stream(arrival={"kind": "onoff", "rate_on": 1, "rate_off": 0, "mean_on_s": 0,
                          "mean_off_s": 1}), "mean_on_s"),
        (_stream(arrival={"kind": "spike", "base_rate": 1, "spike_rate": 0, "start_s": 0,
                          "duration_s": 1}), "spike_rate"),
        (_stream(arrival={"kind": "step", "rates": [1, 2], "times": [5, 10]}), "times must start at 0"),
        (_stream(arrival={"kind": "step", "rates": [1, 2], "times": [0, 0]}), "increase strictly"),
        (_stream(arrival={"kind": "step", "rates": [0], "times": [0]}), "at least one rate"),
        (_stream(arrival={"kind": "nonsense", "rate": 1}), "nonsense"),
        (_stream(prompt_tokens={"kind": "lognormal", "median": 5, "mean": 6, "sigma": 1}), "exactly one of median or mean"),
        (_stream(prompt_tokens={"kind": "uniform", "min": 10, "max": 5}), "min must not exceed max"),
        (_stream(prompt_tokens={"kind": "fixed", "value": 0}), "value"),
        (_stream(duration_s=None), "duration_s or num_requests"),
        (_stream(max_prompt_tokens=0), "max_prompt_tokens"),
        (_stream(output_tokens=None), "output_tokens is required"),
        (_stream(prompt_tokens={"kind": "empirical", "path": "x.csv", "format": "splitwise",
                                "joint": True}), "output_tokens must be left out"),
        (_stream(prompt_tokens={"kind": "empirical", "path": "x.csv", "format": "csv"}), "columns"),
        (_stream(rate=5), "rate"),  # unknown key on the stream
        ({"kind": "trace", "format": "azure", "path": "a.csv", "time_window": [5, 5]}, "time_window"),
        ({"kind": "trace", "format": "azure", "path": "a.csv", "rate_scale": 0}, "rate_scale"),
        ({"kind": "trace", "format": "azure", "path": "a.csv",
          "columns": {"arrival": "t", "prompt_tokens": "p", "output_tokens": "o"}}, "only for formats"),
        ({"kind": "trace", "format": "csv", "path": "a.csv",
          "columns": {"prompt_tokens": "p", "output_tokens": "o"}}, "columns.arrival is required"),
        ({"kind": "trace", "format": "excel", "path": "a.csv"}, "format"),
        ({"kind": "batch", "num_requests": 0, "deadline_s": 1, "prompt_tokens": {"kind": "fixed", "value": 1},
          "output_tokens": {"kind": "fixed", "value": 1}}, "num_requests"),
        ({"kind": "batch", "num_requests": 5, "deadline_s": 0, "prompt_tokens": {"kind": "fixed", "value": 1},
          "output_tokens": {"kind": "fixed", "value": 1}}, "deadline_s"),
    ],
)
def test_mistakes_are_errors_that_name_the_field(stream: dict, field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        WorkloadConfig.model_validate({"streams": [stream]})
    assert field in str(caught.value)


def test_empty_stream_list_is_an_error() -> None:
    with pytest.raises(ValidationError, match="streams"):
        WorkloadConfig.model_validate({"streams": []})


def test_joint_is_only_for_prompt_tokens() -> None:
    with pytest.raises(ValidationError, match="joint: true goes in prompt_tokens"):
        SyntheticStream.model_validate(
            _stream(output_tokens={"kind": "empirical", "path": "x", "format": "mooncake", "joint": True})
        )
    with pytest.raises(ValidationError, match="'column' cannot be set"):
        EmpiricalLength.model_validate(
            {"path": "x", "format": "mooncake", "joint": True, "column": "prompt"}
        )


def test_configs_are_frozen() -> None:
    config = WorkloadConfig.model_validate({"streams": [_stream()]})
    with pytest.raises(ValidationError):
        config.streams[0].start = 5.0  # type: ignore[misc]
