"""Fuzzing the config loader: a mutated valid scenario gives a clean error or a valid config.

Each example starts from one of three small valid scenarios (static, reactive and Chiron
policies, synthetic and batch streams, engine and lifecycle keys) and mutates it the way a
careless edit or a corrupt file would: a key dropped, renamed or added, a value replaced by
an extreme or wrongly typed one (``inf``, ``nan``, 2^63, 1e30, a negative, a string, a list,
a path), or the YAML text itself truncated, byte-flipped or with a line duplicated or
deleted. The result goes through :func:`load_config` (with a ``--set`` now and then). The only
outcomes allowed are a :class:`ChironError`, whose message the CLI prints as one ``error:``
line, or a :class:`ScenarioConfig`; any other exception fails the test. Some of the valid
configs that stay small are also simulated, which must finish or fail cleanly too.
Examples are derandomized, use no database and are bounded so the file runs in ~20 s.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chironsim.errors import ChironError
from chironsim.experiments.config import ScenarioConfig, load_config
from chironsim.experiments.runner import run
from chironsim.workload.volume import stream_extent

FUZZ = settings(max_examples=500, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

STATIC: dict[str, Any] = {
    "name": "fuzz",
    "seed": 3,
    "duration_s": 30,
    "drain_s": 30,
    "sample_interval_s": 1.0,
    "classes": {"interactive": {"priority": 0, "slo": {"ttft": 2.0, "tpot": 0.1}},
                "batch": {"priority": 1, "slo": {"deadline": True}}},
    "workload": {"streams": [
        {"kind": "synthetic", "request_class": "interactive",
         "arrival": {"kind": "gamma", "rate": 2.0, "cv": 1.5},
         "prompt_tokens": {"kind": "lognormal", "median": 200.0, "sigma": 0.8},
         "output_tokens": {"kind": "uniform", "min": 5, "max": 40},
         "max_prompt_tokens": 2000, "duration_s": 30},
        {"kind": "batch", "request_class": "batch", "num_requests": 10, "submit_at": 5.0,
         "window_s": 2.0, "deadline_s": 120.0,
         "prompt_tokens": {"kind": "fixed", "value": 100},
         "output_tokens": {"kind": "exponential", "mean": 20.0}},
    ]},
    "cluster": {"model": "llama-3-8b", "gpu": "h100-sxm",
                "engine": {"max_num_seqs": 64, "max_num_batched_tokens": 4096, "block_size": 16},
                "lifecycle": {"provision_s": 5.0, "load_bandwidth_gbps": 5.0, "engine_startup_s": 2.0},
                "pools": {"default": {"instances": 1, "tp": 1, "max_instances": 4}}},
    "policy": {"kind": "static", "router": {"kind": "least_outstanding"}},
    "output": {"format": "parquet", "plots": False},
}
REACTIVE = {**copy.deepcopy(STATIC), "policy": {
    "kind": "reactive", "metric": "queue_length", "target": 2.0, "interval_s": 5.0,
    "min_instances": 0, "max_instances": 3, "cooldown_s": 10.0}}
CHIRON = {**copy.deepcopy(STATIC), "policy": {"kind": "chiron", "global_interval": 5.0,
                                              "local_interval": 1.0, "max_batch_instances": 2}}
CHIRON["cluster"] = {**STATIC["cluster"], "pools": {
    "interactive": {"instances": 1, "classes": ["interactive"], "max_instances": 3},
    "mixed": {"instances": 1, "evict_lower_priority": True, "max_instances": 2},
    "batch": {"instances": 0, "classes": ["batch"], "max_instances": 2}}}
BASES = [STATIC, REACTIVE, CHIRON]

#: What a careless edit puts in a value: non-finite, past int64, huge, tiny, negative,
#: fractional, the wrong type, a path, control characters, other scripts.
EXTREMES: list[Any] = [
    math.inf, -math.inf, math.nan, "inf", "nan", ".inf", "-1", -1, 0, 1, 3, 16, 1024, 2**31,
    2**63 - 1, 2**63, 2**64, -(2**63) - 1, 10**30, 1e30, -1e30, 1e-300, 5e-324, 1e308, 0.5, 1e-6,
    "", "x", "../x", "a/b", ".", "\x00", "é中", "9" * 400, [], {}, None, True, False, [1, 2],
    {"kind": "poisson"}, {"kind": "nope"}, ["interactive", "interactive"],
]

values = st.one_of(
    st.sampled_from(EXTREMES),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.integers(min_value=0, max_value=64),  # plausible values, so that some configs stay valid
    st.floats(min_value=0, max_value=500),
)


def paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key path in a nested config, parents before children."""
    found = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, child in node.items():
            found += paths(child, (*prefix, key))
    elif isinstance(node, list):
        for index, child in enumerate(node):
            found += paths(child, (*prefix, index))
    return found


def parent_of(data: Any, path: tuple[Any, ...]) -> Any:
    for part in path[:-1]:
        data = data[part]
    return data


@st.composite
def mutated_data(draw: st.DrawFn) -> dict[str, Any]:
    """A base scenario with one to three structural mutations."""
    data = copy.deepcopy(draw(st.sampled_from(BASES)))
    for _ in range(draw(st.sampled_from([1, 1, 1, 2, 3]))):
        path = draw(st.sampled_from(paths(data)))
        parent, last = parent_of(data, path), path[-1]
        op = draw(st.sampled_from(["scale", "scale", "replace", "replace", "drop", "rename", "add"]))
        old = parent[last]
        if op == "scale" and isinstance(old, (int, float)) and not isinstance(old, bool):
            # a plausible edit of a number: often still valid, sometimes past a bound
            factor = draw(st.sampled_from([0, 0.1, 0.5, 2, 3, 10, 1000, 10**9, -1]))
            parent[last] = type(old)(old * factor)
        elif op in ("replace", "scale"):
            parent[last] = draw(values)
        elif op == "drop":
            del parent[last]
        elif op == "rename" and isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=10))] = parent.pop(last)
        elif op == "add" and isinstance(parent, dict):
            parent[draw(st.sampled_from(["x", "rate", "kind", "tp", "name", "instances"]))] = draw(values)
    return data


ODD_LINES = [
    b"[1, 2]: x", b"{a: 1}: x", b"? [a]", b": b", b"<<: *nowhere", b"&a x: *a", b"<<: {seed: 2}",
    b"x: !!python/object/apply:os.system [echo]", b"x: !!binary AAAA", b"x: !!set {a}",
    b"%YAML 1.1", b"---", b"...", b"x: |", b"  - [", b"x: 2001-12-14", b"x: 0o17", b"x: 1_000",
    b"x: ~", b"? x", b"*a", b"&a", b"- - -", b"\t- x",
]


@st.composite
def mutated_text(draw: st.DrawFn) -> bytes:
    """A base scenario's YAML with one to three byte- or line-level mutations."""
    raw = yaml.safe_dump(draw(st.sampled_from(BASES)), sort_keys=False).encode()
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["truncate", "flip", "insert", "dup-line", "drop-line", "line"]))
        if not raw:
            break
        at = draw(st.integers(0, len(raw) - 1))
        if op == "truncate":
            raw = raw[:at]
        elif op == "flip":
            raw = raw[:at] + bytes([raw[at] ^ draw(st.integers(1, 255))]) + raw[at + 1:]
        elif op == "insert":
            raw = raw[:at] + draw(st.binary(min_size=1, max_size=4)) + raw[at:]
        elif op == "line":  # a line of YAML that is legal somewhere but surprising here
            start = raw.rfind(b"\n", 0, at) + 1
            raw = raw[:start] + draw(st.sampled_from(ODD_LINES)) + b"\n" + raw[start:]
        else:
            lines = raw.splitlines(keepends=True)
            i = draw(st.integers(0, len(lines) - 1))
            lines[i:i + 1] = [lines[i], lines[i]] if op == "dup-line" else []
            raw = b"".join(lines)
    return raw


OVERRIDES = st.lists(st.sampled_from([
    "seed.foo=1", "cluster.pools.default.tp=3", "workload.streams[0].arrival.rate=.inf",
    "workload.streams.5.x=1", "name=../x", "sample_interval_s=1e-9", "cluster=[1", "x.y.z=1",
    "=1", "seed", "policy={kind: reactive, target: 0.5}", "duration_s=10", "seed=5",
    "cluster.pools.default.instances=2", "workload.streams[0].arrival.rate=3.5",
    "cluster.engine.max_num_seqs=8",
]), max_size=2, unique=True)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz-config")


def small(config: ScenarioConfig) -> bool:
    """Few requests, a short run and few instances: cheap enough to simulate here."""
    extents = [stream_extent(s, config.duration_s) for s in config.workload.streams]
    requests = sum(e.requests or math.inf for e in extents)
    end = config.duration_s or max((e.end_s or math.inf) for e in extents)
    instances = sum(p.instances for p in config.cluster.pools.values())
    return requests <= 300 and end + config.drain_s <= 2_000 and instances <= 6


def load_cleanly(path: Path, overrides: list[str], simulate: bool) -> None:
    """``load_config`` (and, for a small valid config, a run) may only fail as a ChironError."""
    try:
        config, base_dir = load_config(path, overrides)
    except ChironError as err:
        assert str(err).strip(), "an error must say what is wrong"
        return
    assert isinstance(config, ScenarioConfig)
    if simulate and small(config):
        try:
            run(config, base_dir)
        except ChironError:
            pass


@FUZZ
@given(data=mutated_data(), overrides=st.one_of(st.just([]), OVERRIDES), simulate=st.integers(0, 1))
def test_mutated_config_gives_a_clean_error_or_a_valid_config(
    folder: Path, data: dict[str, Any], overrides: list[str], simulate: int,
) -> None:
    path = folder / "scenario.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    load_cleanly(path, overrides, simulate == 0)


@FUZZ
@given(raw=mutated_text())
def test_mutated_yaml_text_gives_a_clean_error_or_a_valid_config(folder: Path, raw: bytes) -> None:
    path = folder / "scenario.yaml"
    path.write_bytes(raw)
    load_cleanly(path, [], simulate=False)


def test_the_unmutated_bases_are_valid_and_run(folder: Path) -> None:
    """The fuzz would prove nothing if its starting points were already invalid."""
    for base in BASES:
        path = folder / "base.yaml"
        path.write_text(yaml.safe_dump(base, sort_keys=False))
        config, base_dir = load_config(path)
        assert small(config)
        assert len(run(config, base_dir).requests) > 0
