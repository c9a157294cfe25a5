"""Config mistakes: schema, bounds, names, cross references, YAML and ``--set``.

Every case names where the mistake is: ``scenario.yaml:LINE`` (the line computed from the
file the case writes, or written out in a literal YAML text), or the ``--set`` that made it.
"""

from __future__ import annotations

import math
from typing import Any

from corpus.case import Case, as_yaml, changed, light_scenario, run_case

BASE = light_scenario()
STREAM = "workload.streams.0"
POOL = "cluster.pools.default"


def at(data: dict[str, Any], needle: str) -> str:
    """``scenario.yaml:N`` for the first line of ``data``'s YAML that contains ``needle``."""
    for number, line in enumerate(as_yaml(data).splitlines(), start=1):
        if needle in line:
            return f"scenario.yaml:{number}"
    raise AssertionError(f"{needle!r} not in the YAML of {data}")


def bad(name: str, change: dict[str, Any], needle: str, *expect: str, extra: tuple[str, ...] = ()) -> Case:
    """A run of BASE with ``change``, whose error is on the line holding ``needle``."""
    data = changed(BASE, **change)
    return run_case(name, data, [f"{at(data, needle)}: ", *expect], *extra)


def literal(name: str, text: str | bytes, expect: list[str], *extra: str) -> Case:
    return Case(name, {"scenario.yaml": text},
                ["run", "scenario.yaml", "--quiet", "--out", "results/x", *extra], expect)


# The light scenario as literal YAML, so that a case's line numbers can be read off the text.
TEXT = """\
name: corpus
seed: 1
duration_s: 20
drain_s: 60
classes:
  interactive:
    slo: {ttft: 2.0, tpot: 0.1}
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
  gpu: h100-sxm
  pools:
    default: {instances: 1}
output: {plots: false}
"""

BOMB = "\n".join(['l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
                 + [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, 10)])

ONOFF = {"kind": "onoff", "rate_on": 1.0, "rate_off": 0.0, "mean_on_s": 10.0, "mean_off_s": 10.0}
REACTIVE = {"kind": "reactive", "target": 0.7}
#: Chiron's three pools and two classes, for cases about the names its config references.
CHIRON_POOLS = {
    "classes": {"interactive": {"slo": {"ttft": 2.0}}, "batch": {"slo": {"e2e": 3600.0}}},
    "cluster.pools": {"interactive": {"instances": 1, "classes": ["interactive"]},
                      "mixed": {"instances": 1},
                      "batch": {"instances": 0, "classes": ["batch"]}},
}

CASES: list[Case] = [
    # --- schema: keys, types, signs (already handled before issue 8) -------------------------
    run_case("unknown-key", changed(BASE, **{f"{POOL}.instancez": 2}),
             ["scenario.yaml:", "cluster.pools.default.instancez", "unknown key"]),
    run_case("wrong-type", changed(BASE, **{f"{POOL}.instances": "two"}),
             ["scenario.yaml:", "cluster.pools.default.instances", "whole number"]),
    bad("config-negative-rate", {f"{STREAM}.arrival.rate": -1.5}, "rate: -1.5",
        "workload.streams[0].arrival.rate: must be greater than 0 (got -1.5)"),
    bad("config-unknown-arrival-kind", {f"{STREAM}.arrival.kind": "poison"}, "kind: poison",
        "unknown kind 'poison'; did you mean 'poisson'?"),
    bad("config-unknown-class", {f"{STREAM}.request_class": "batchy"}, "request_class: batchy",
        "class 'batchy' is not declared under 'classes'"),
    bad("config-unknown-gpu", {"cluster.gpu": "h100-sxn"}, "gpu: h100-sxn",
        "cluster.gpu: unknown GPU 'h100-sxn'; did you mean h100-sxm"),
    bad("config-unknown-model", {"cluster.model": "llama-3-8", "cluster.gpu": "h100-sxm"},
        "model: llama-3-8", "cluster.model: unknown model 'llama-3-8'; did you mean"),
    bad("config-model-too-big", {"cluster.model": "llama-3-70b", "cluster.gpu": "a10g"},
        "default:", "cluster.pools.default: "),
    bad("config-fp8-weights-on-a100", {"cluster.gpu": "a100", f"{POOL}.dtype": "fp8"}, "dtype: fp8",
        "cluster.pools.default.dtype: dtype fp8 needs FP8 tensor cores, which A100-80GB does not have",
        "use dtype: bf16, or a GPU with FP8 (H100-SXM"),
    bad("config-fp8-weights-cluster-wide-on-a10g", {"cluster.gpu": "a10g", "cluster.dtype": "fp8"},
        "dtype: fp8", "cluster.dtype: dtype fp8 needs FP8 tensor cores, which A10G does not have"),
    bad("config-unknown-kv-cache-dtype", {f"{POOL}.kv_cache_dtype": "fp8_e5m2"}, "kv_cache_dtype",
        "cluster.pools.default.kv_cache_dtype"),
    bad("config-unknown-policy", {"policy": {"kind": "hpa"}}, "kind: hpa",
        "policy.kind: unknown kind 'hpa'"),
    bad("config-missing-trace-file",
        {f"{STREAM}": {"kind": "trace", "format": "azure", "path": "nope.csv",
                       "request_class": "interactive"}}, "path: nope.csv",
        "workload.streams[0].path: trace file", "does not exist"),
    literal("config-file-is-a-list", "- a\n- b\n", ["scenario.yaml: expected a mapping of config keys"]),
    Case("config-file-missing", {}, ["run", "nope.yaml", "--quiet"], ["nope.yaml: config file not found"]),

    # --- YAML ---------------------------------------------------------------------------------
    literal("config-bad-yaml", TEXT.replace("  pools:\n", "  pools: [\n"),
            ["scenario.yaml:19: not valid YAML", "closing bracket missing"]),
    literal("config-duplicate-key", TEXT + "seed: 7\n",
            ["scenario.yaml:22: key 'seed' is given twice (first on line 2)"]),
    literal("config-unclosed-quote", TEXT.replace("    slo: {ttft", '    slo: "{ttft'),
            ["scenario.yaml:7: not valid YAML", "closing quote missing"]),
    literal("config-unclosed-quote-closed-later",
            TEXT.replace("  model: llama-3-8b", '  model: "llama-3-8b').replace(
                "output: {plots: false}", 'output: {plots: false, format: "csv"}'),
            ["scenario.yaml:17: not valid YAML", "opened on line 17"]),
    literal("config-bad-utf8-byte",
            TEXT.encode().replace(b"drain_s: 60", b"drain_s: 60  # d\xe9lai"),
            ["scenario.yaml:4: not valid UTF-8 (byte 0xe9 at column 17)"]),
    literal("config-control-character", TEXT.replace("drain_s: 60", "drain_s: 60\x07"),
            ["scenario.yaml:4: not valid YAML (character '\\x07'"]),
    literal("config-list-as-key", TEXT.replace("drain_s: 60", "[drain_s]: 60"),
            ["scenario.yaml:4: a key must be a plain name, not a list"]),
    literal("config-alias-bomb",
            BOMB + "\n" + TEXT.replace("    default: {instances: 1}",
                                       "    default: {instances: 1, classes: *l9}"),
            ["scenario.yaml:9: cluster.pools.default.classes[0]: must be a string",
             "scenario.yaml:1: l0: unknown key"]),

    # --- --set and --seed ---------------------------------------------------------------------
    run_case("config-set-without-value", BASE, ["--set 'seed': expected KEY=VALUE"], "--set", "seed"),
    run_case("config-set-missing-index", BASE,
             ["--set workload.streams.3.duration_s=5: workload.streams has 1 entry; index 3 is out of range"],
             "--set", "workload.streams.3.duration_s=5"),
    run_case("config-set-bad-yaml-value", BASE, ["--set name=[1: the value is not valid YAML"],
             "--set", "name=[1"),
    run_case("config-set-through-a-number", BASE,
             ["--set seed.foo=1: seed: must be a whole number"], "--set", "seed.foo=1"),
    run_case("config-set-through-a-list-entry", changed(BASE, **{"workload.streams": [1.5]}),
             ["--set workload.streams[0].arrival.rate=3: workload.streams[0]: needs a 'kind'"],
             "--set", "workload.streams[0].arrival.rate=3"),
    run_case("config-set-new-top-key", BASE, ["--set nope.x=1: nope: unknown key"], "--set", "nope.x=1"),
    run_case("config-set-breaks-pool-check", BASE,
             [f"{at(BASE, 'default:')} (with --set cluster.pools.default.max_instances=0): "
              "cluster.pools.default: instances (1) must not exceed max_instances (0)"],
             "--set", "cluster.pools.default.max_instances=0"),
    run_case("config-set-rate-inf", BASE,
             ["--set workload.streams[0].arrival.rate=.inf: workload.streams[0].arrival.rate: "
              "must be at most 100,000 arrivals/s (got inf)"],
             "--set", "workload.streams[0].arrival.rate=.inf"),
    run_case("config-seed-too-large", BASE, ["argument --seed: must be at most 9223372036854775807"],
             "--seed", str(2**64)),

    # --- bounds: traffic ----------------------------------------------------------------------
    bad("config-rate-inf", {f"{STREAM}.arrival.rate": math.inf}, "rate: .inf",
        "workload.streams[0].arrival.rate: must be at most 100,000 arrivals/s (got inf)"),
    bad("config-rate-inf-string", {f"{STREAM}.arrival.rate": "inf"}, "rate: inf",
        "arrival.rate: must be at most 100,000 arrivals/s (got 'inf')"),
    bad("config-rate-nan", {f"{STREAM}.arrival.rate": math.nan}, "rate: .nan",
        "workload.streams[0].arrival.rate: must be greater than 0 (got nan)"),
    bad("config-rate-tiny", {f"{STREAM}.arrival.rate": 1e-300}, "rate: 1.0e-300",
        "arrival.rate: must be at least 1e-06 arrivals/s"),
    bad("config-gamma-cv-huge", {f"{STREAM}.arrival": {"kind": "gamma", "rate": 2.0, "cv": 1e9}},
        "cv:", "workload.streams[0].arrival.cv: must be at most 100"),
    bad("config-gamma-cv-tiny", {f"{STREAM}.arrival": {"kind": "gamma", "rate": 2.0, "cv": 1e-300}},
        "cv:", "workload.streams[0].arrival.cv: must be at least 0.001"),
    bad("config-onoff-rate-inf", {f"{STREAM}.arrival": {**ONOFF, "rate_on": math.inf}}, "rate_on:",
        "workload.streams[0].arrival.rate_on: must be at most 100,000 arrivals/s (got inf)"),
    bad("config-onoff-period-tiny", {f"{STREAM}.arrival": {**ONOFF, "mean_off_s": 1e-12}}, "mean_off_s:",
        "workload.streams[0].arrival.mean_off_s: must be at least 0.001 s"),
    bad("config-diurnal-rate-inf",
        {f"{STREAM}.arrival": {"kind": "diurnal", "mean_rate": math.inf, "amplitude": 0.5}},
        "mean_rate:", "workload.streams[0].arrival.mean_rate: must be at most 100,000 arrivals/s"),
    bad("config-spike-rate-inf",
        {f"{STREAM}.arrival": {"kind": "spike", "base_rate": 1.0, "spike_rate": math.inf,
                               "start_s": 5.0, "duration_s": 5.0}},
        "spike_rate:", "workload.streams[0].arrival.spike_rate: must be at most 100,000 arrivals/s"),
    bad("config-step-rate-inf",
        {f"{STREAM}.arrival": {"kind": "step", "rates": [1.0, math.inf], "times": [0.0, 5.0]}},
        "- .inf", "workload.streams[0].arrival.rates[1]: must be at most 100,000 arrivals/s"),
    bad("config-num-requests-huge", {f"{STREAM}.num_requests": 10**12}, "num_requests:",
        "workload.streams[0].num_requests: must be at most 50,000,000 requests"),
    bad("config-stream-duration-huge", {f"{STREAM}.duration_s": 1e30}, "  duration_s: 1.0e+30",
        "workload.streams[0].duration_s: must be at most 31,622,400 s"),
    bad("config-rate-times-duration", {f"{STREAM}.arrival.rate": 90_000.0,
                                       f"{STREAM}.duration_s": 7200, "duration_s": None},
        "- kind: synthetic", "workload.streams[0]: expects about 648,000,000 requests",
        "at most 50,000,000 per stream"),
    bad("config-num-requests-at-tiny-rate",
        {f"{STREAM}.arrival.rate": 1e-5, f"{STREAM}.num_requests": 1000,
         f"{STREAM}.duration_s": None, "duration_s": None},
        "- kind: synthetic", "workload.streams[0]: num_requests 1,000", "at most 31,622,400 s"),

    # --- bounds: lengths ----------------------------------------------------------------------
    bad("config-fixed-length-2-63", {f"{STREAM}.prompt_tokens.value": 2**63}, "value: 9223372036854775808",
        "workload.streams[0].prompt_tokens.value: must be at most 10,000,000 tokens"),
    bad("config-fixed-length-float-huge", {f"{STREAM}.output_tokens.value": 1e30}, "value: 1.0e+30",
        "workload.streams[0].output_tokens.value: must be at most 10,000,000 tokens"),
    bad("config-max-prompt-tokens-huge", {f"{STREAM}.max_prompt_tokens": 2**64}, "max_prompt_tokens:",
        "workload.streams[0].max_prompt_tokens: must be at most 10,000,000 tokens"),
    bad("config-lognormal-median-huge",
        {f"{STREAM}.prompt_tokens": {"kind": "lognormal", "median": 1e30, "sigma": 1.0}},
        "median:", "workload.streams[0].prompt_tokens.median: must be at most 10,000,000 tokens"),

    # --- bounds: time and sampling --------------------------------------------------------------
    bad("config-duration-inf", {"duration_s": math.inf}, "duration_s: .inf",
        "duration_s: must be at most 31,622,400 s (got inf)"),
    bad("config-sample-interval-tiny", {"sample_interval_s": 1e-6}, "sample_interval_s:",
        "sample_interval_s: must be at least 0.001 s (got 1e-06)"),
    bad("config-too-many-samples",
        {"duration_s": 3e7, "sample_interval_s": 1.0, f"{STREAM}.arrival.rate": 0.01,
         f"{STREAM}.duration_s": 3e7}, "sample_interval_s:",
        "sample_interval_s: 30,000,060 timeseries samples per pool", "at most 2,000,000"),

    # --- bounds: cluster and policies ---------------------------------------------------------
    bad("config-instances-million", {f"{POOL}.instances": 1_000_000}, "instances: 1000000",
        "cluster.pools.default.instances: must be at most 10,000 instances (got 1000000)"),
    bad("config-max-instances-huge", {f"{POOL}.max_instances": 10**9}, "max_instances:",
        "cluster.pools.default.max_instances: must be at most 10,000 instances"),
    bad("config-max-num-seqs-huge", {"cluster.engine": {"max_num_seqs": 10**9}}, "max_num_seqs:",
        "cluster.engine.max_num_seqs: must be at most 65,536 sequences"),
    bad("config-block-size-huge", {"cluster.engine": {"block_size": 2**40}}, "block_size:",
        "cluster.engine.block_size: must be at most 1,024 tokens"),
    bad("config-bandwidth-tiny", {"cluster.lifecycle": {"load_bandwidth_gbps": 1e-300}},
        "load_bandwidth_gbps:", "cluster.lifecycle.load_bandwidth_gbps: must be at least 0.01 GB/s"),
    bad("config-reactive-interval-tiny", {"policy": {**REACTIVE, "interval_s": 1e-9}}, "interval_s:",
        "policy.interval_s: must be at least 0.001 s"),
    bad("config-chiron-interval-tiny", {"policy": {"kind": "chiron", "global_interval": 1e-9}},
        "global_interval:", "policy.global_interval: must be at least 0.001 s"),
    bad("config-chiron-pool-typo", {**CHIRON_POOLS, "policy": {"kind": "chiron", "batch_pool": "bacth"}},
        "batch_pool: bacth", "policy.batch_pool: unknown pool 'bacth'", "did you mean 'batch'"),
    bad("config-chiron-class-typo",
        {**CHIRON_POOLS, "policy": {"kind": "chiron", "interactive_class": "interactiv",
                                    "itl_slo": {"interactiv": 0.05, "batch": 0.5}}},
        "interactive_class: interactiv", "policy.interactive_class: class 'interactiv' is not "
        "declared under 'classes'", "did you mean 'interactive'"),
    bad("config-tp-3", {f"{POOL}.tp": 3}, "tp: 3",
        "cluster.pools.default.tp: tensor-parallel degree 3 is not possible",
        "allowed on H100-SXM: 1, 2, 4, 8"),
    bad("config-tp-16", {f"{POOL}.tp": 16}, "tp: 16", "cluster.pools.default.tp:",
        "one H100-SXM node holds 8 GPUs", "allowed on H100-SXM: 1, 2, 4, 8"),
    bad("config-tp-1024", {f"{POOL}.tp": 1024}, "tp: 1024", "cluster.pools.default.tp:",
        "allowed on H100-SXM: 1, 2, 4, 8"),
    bad("config-static-pool-empty", {f"{POOL}.instances": 0}, "instances: 0",
        "cluster.pools.default.instances: class 'interactive' (workload.streams[0]) would never be "
        "served", "policy 'static' never adds instances"),

    # --- result names ----------------------------------------------------------------------------
    bad("config-name-escapes-results", {"name": "../x"}, "name: ../x",
        "name: must not contain a path separator"),
    bad("config-name-empty", {"name": ""}, "name: ''", "name: must not be empty"),
    bad("config-name-dot", {"name": "."}, "name: .", "name: must not be '.'"),
    bad("config-name-hidden", {"name": ".x"}, "name: .x", "name: must not start with '.'"),
]
