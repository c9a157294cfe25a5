"""The scenario config: one YAML file describes a whole run, validated at the boundary.

Everything past :func:`load_config` trusts its inputs: the schema, the cross references
(classes, pools), the catalog names, whether each pool's model fits its GPUs, and the files the
workload reads (existence and header) are all checked here, before anything runs. Each problem
is reported as ``FILE:LINE: dotted.key[0].path: what is wrong and what was expected`` and
becomes exit status 2 in the CLI. Only a trace's *body* is read later, while it streams; a
malformed line there raises TraceFormatError naming the file and line.

This module holds what a scenario *is*; reading YAML with line numbers is
:mod:`chironsim.experiments.yaml_source`'s job and wording pydantic's errors is
:mod:`chironsim.experiments.messages`'.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator

from chironsim.config_base import ConfigModel, PositiveSeconds, Seconds, check_result_name, limited
from chironsim.errors import ChironError, ConfigError
from chironsim.experiments.feasibility import feasibility_problems
from chironsim.experiments.messages import KeyPath, describe, did_you_mean, dotted
from chironsim.experiments.yaml_source import Locator, read_yaml
from chironsim.limits import MAX_SEED, MAX_TIME_S, MIN_SAMPLE_INTERVAL_S
from chironsim.metrics.slo import RequestClassSpec
from chironsim.policies.registry import PolicyConfig
from chironsim.policies.static import StaticPolicyConfig
from chironsim.sim.config import ClusterConfig
from chironsim.workload.config import WorkloadConfig

Seed = limited(int, MAX_SEED, "", ge=0)
SampleInterval = limited(float, MAX_TIME_S, "s", gt=0, floor=MIN_SAMPLE_INTERVAL_S)
# Validation context flag: cross references are then checked by parse_config, which can
# point at the offending key, instead of by the model validator, which can only say "<root>".
_DEFER_CROSS_REFERENCES = "defer_cross_references"


class OutputConfig(ConfigModel):
    """What the CLI writes besides the tables."""

    format: Literal["parquet", "csv"] = "parquet"
    plots: bool = True


class ScenarioConfig(ConfigModel):
    """One simulated scenario: traffic, cluster, policy and the observation window."""

    name: str = Field("scenario", description="results folder name: results/<name>")
    seed: Seed = 0
    duration_s: PositiveSeconds | None = Field(
        None, description="observation window: arrivals at or after it are dropped and instances "
        "are billed at least until it; None = until the workload ends")
    drain_s: Seconds = Field(600.0, description="time after the window (or last arrival) "
                                   "for in-flight requests to finish; the rest are 'unfinished'")
    sample_interval_s: SampleInterval = Field(1.0, description="timeseries sampling period")
    classes: dict[str, RequestClassSpec] = Field(
        default_factory=lambda: {"default": RequestClassSpec()})
    workload: WorkloadConfig
    cluster: ClusterConfig = ClusterConfig()
    policy: PolicyConfig = StaticPolicyConfig(kind="static")
    output: OutputConfig = OutputConfig()

    @field_validator("name")
    @classmethod
    def _folder_name(cls, name: str) -> str:
        return check_result_name(name)

    @model_validator(mode="after")
    def _cross_references(self, info: ValidationInfo) -> "ScenarioConfig":
        if info.context and info.context.get(_DEFER_CROSS_REFERENCES):
            return self
        problems = cross_reference_problems(self)
        if problems:
            raise ValueError("; ".join(f"{dotted(path)}: {msg}" for path, msg in problems))
        return self


def cross_reference_problems(config: ScenarioConfig) -> list[tuple[KeyPath, str]]:
    """Names one part of the config uses that another part must declare, as (key, problem)."""
    problems: list[tuple[KeyPath, str]] = []
    declared = sorted(config.classes)

    def unknown_class(name: str, implicit: bool = False) -> str:
        default = " (the default when request_class is left out)" if implicit else ""
        return (f"class {name!r}{default} is not declared under 'classes'"
                f"{did_you_mean(name, declared)} (declared: {', '.join(declared)})")

    if "all" in config.classes:
        problems.append((("classes", "all"),
                         "'all' is reserved for the summary's all-classes row; rename the class"))
    for i, stream in enumerate(config.workload.streams):
        if stream.request_class not in config.classes:
            implicit = "request_class" not in stream.model_fields_set
            problems.append((("workload", "streams", i, "request_class"),
                             unknown_class(stream.request_class, implicit)))
    pools = sorted(config.cluster.pools)
    references = getattr(config.policy, "references", None)  # a policy registered elsewhere
    for key, what, name in references() if references is not None else ():
        if what == "pool" and name not in config.cluster.pools:
            problems.append((("policy", *key), f"unknown pool {name!r}"
                             f"{did_you_mean(name, pools)} (cluster.pools has: {', '.join(pools)})"))
        elif what == "class" and name not in config.classes:
            problems.append((("policy", *key), unknown_class(name)))
    for name, pool in config.cluster.pools.items():
        for cls in pool.classes or []:
            if cls not in config.classes:
                problems.append((("cluster", "pools", name, "classes"), unknown_class(cls)))
    return problems + engine_contradictions(config) + cluster_bound_problems(config)


def cluster_bound_problems(config: ScenarioConfig) -> list[tuple[KeyPath, str]]:
    """Policy settings above the cluster mechanism's limit that bounds them (the policy
    config's ``cluster_bounds``, e.g. llumnix's migrations at a time). The mechanism's value
    is the one source of what can happen; the policy's may only be lower."""
    bounds = getattr(config.policy, "cluster_bounds", None)  # a policy registered elsewhere
    problems: list[tuple[KeyPath, str]] = []
    for policy_key, cluster_path, what in bounds() if bounds is not None else ():
        asked = getattr(config.policy, policy_key)
        limit: Any = config.cluster
        for part in cluster_path:
            limit = getattr(limit, part)
        if asked > limit:
            cluster_key = dotted(("cluster", *cluster_path))
            problems.append((("policy", policy_key), (
                f"{asked} exceeds {cluster_key}: {limit}, the most {what}; the policy would "
                f"ask for moves the mechanism refuses. Lower policy.{policy_key} or raise "
                f"{cluster_key}")))
    return problems


def engine_contradictions(config: ScenarioConfig) -> list[tuple[KeyPath, str]]:
    """Engine settings written in the file that contradict what the policy needs on every
    engine (its ``engine_needs``, e.g. Llumnix-base's priority-agnostic engine).

    The policy sets what it needs itself, so leaving the key out is right; writing the opposite
    value is refused, naming both keys, rather than letting one silently win: either way the
    run would not be what one of the two keys says it is.
    """
    needs = getattr(config.policy, "engine_needs", None)  # a policy registered elsewhere
    if needs is None:
        return []
    engines: list[tuple[KeyPath, Any]] = [(("cluster", "engine"), config.cluster.engine)]
    engines += [(("cluster", "pools", name, "engine"), pool.engine)
                for name, pool in config.cluster.pools.items() if pool.engine is not None]
    problems: list[tuple[KeyPath, str]] = []
    for key, (value, policy_key) in needs().items():
        for path, engine in engines:
            if key in engine.model_fields_set and getattr(engine, key) != value:
                written = yaml.safe_dump(getattr(engine, key)).splitlines()[0]
                policy_value = yaml.safe_dump(getattr(config.policy, policy_key)).splitlines()[0]
                problems.append(((*path, key), (
                    f"{written} contradicts policy.{policy_key}: {policy_value}, which runs "
                    f"every engine with {key}: {yaml.safe_dump(value).splitlines()[0]}; leave "
                    f"{dotted((*path, key))} out (the policy sets it) or change one of the two")))
    return problems


# ----------------------------------------------------------------------------- overrides

_KEY = re.compile(r"[^.\[\]\s]+(?:\[\d+\])*(?:\.[^.\[\]\s]+(?:\[\d+\])*)*")


def _split_key(key: str, item: str) -> list[str]:
    """``workload.streams[0].rate`` and ``workload.streams.0.rate`` → ``[workload, streams, 0, rate]``."""
    if not _KEY.fullmatch(key):
        raise ConfigError(f"--set {item}: {key!r} is not a dotted key path, "
                          "e.g. cluster.pools.default.instances or workload.streams[0].duration_s")
    return re.findall(r"[^.\[\]]+", key)


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``--set a.b.c=value`` overrides; values are parsed as YAML (``4``, ``true``, ``[1,2]``).

    A missing mapping on the way is created (the schema then rejects keys that do not exist);
    list entries are addressed by index, ``streams.0`` or ``streams[0]``.
    """
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. cluster.pools.default.instances=8")
        key, raw = item.split("=", 1)
        parts = _split_key(key.strip(), item)
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as err:
            raise ConfigError(f"--set {item}: the value is not valid YAML "
                              f"({getattr(err, 'problem', None) or err})") from None
        node: Any = data
        for depth, part in enumerate(parts):
            index: Any = part
            if isinstance(node, list):
                where = dotted(_typed(parts[:depth]))
                if not part.isdigit():
                    raise ConfigError(f"--set {item}: {where} is a list; {part!r} must be an index")
                if int(part) >= len(node):
                    entries = "entry" if len(node) == 1 else "entries"
                    raise ConfigError(f"--set {item}: {where} has {len(node)} {entries}; "
                                      f"index {part} is out of range")
                index = int(part)
            if depth == len(parts) - 1:
                node[index] = value
                break
            child = node[index] if isinstance(node, list) else node.get(index)
            if not isinstance(child, (dict, list)):  # a scalar on the way becomes a mapping
                child = node[index] = {}
            node = child
    return data


def _typed(parts: Sequence[str]) -> KeyPath:
    return tuple(int(p) if p.isdigit() else p for p in parts)


# ----------------------------------------------------------------------------- validation


def parse_config(data: Any, source: str = "<config>", base_dir: Path | None = None) -> ScenarioConfig:
    """Validate a config mapping; names, files, classes and memory fit are checked before anything runs."""
    return validate_scenario(data, Locator(source), base_dir)


def validate_scenario(data: Any, where: Locator, base_dir: Path | None) -> ScenarioConfig:
    """Validate ``data`` as a scenario, reporting each problem where ``where`` says it is.

    The shared core of :func:`parse_config` and :func:`load_config`, public for callers that
    build a scenario from other sources (a sweep's grid point, a regression file's inline
    scenario) and locate its keys with their own :class:`Locator`. ``base_dir`` is the folder
    workload file paths resolve against; None skips the check that those files exist.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{where.source}: expected a mapping of config keys, got {type(data).__name__}")
    try:
        config = ScenarioConfig.model_validate(data, context={_DEFER_CROSS_REFERENCES: True})
    except ValidationError as err:
        raise where.report([describe(e, ScenarioConfig) for e in err.errors()]) from None
    problems = cross_reference_problems(config) + feasibility_problems(config)
    if problems:
        raise where.report(problems)
    if base_dir is not None:
        from chironsim.workload.build import check_workload_files

        try:
            check_workload_files(config.workload, base_dir)
        except ConfigError as err:  # "workload.streams[0].path: trace file ... does not exist"
            key = str(err).split(": ", 1)[0]
            located = where(_typed(_split_key(key, key))) if key.startswith("workload.") else where.source
            raise ConfigError(f"{located}: {err}") from None
        except ChironError as err:  # a bad header: the message names the trace file and line
            raise ConfigError(f"{where.source}: {err}") from None
    return config


def load_config(path: str | Path, overrides: list[str] | None = None) -> tuple[ScenarioConfig, Path]:
    """Read, override and validate a YAML scenario; returns it with the directory paths resolve against."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: config file not found")
    if not path.is_file():
        raise ConfigError(f"{path}: is not a file; expected a scenario YAML file")
    data, root = read_yaml(path)
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys, got {type(data).__name__}")
    set_keys: dict[str, str] = {}
    for item in overrides or []:
        if "=" in item:
            parts = _split_key(item.split("=", 1)[0].strip(), item)
            set_keys[dotted(_typed(_replaced_prefix(data, parts)))] = item
        data = apply_overrides(data, [item])
    return validate_scenario(data, Locator(str(path), root, set_keys), path.parent), path.parent


def _replaced_prefix(data: Any, parts: list[str]) -> list[str]:
    """The part of a ``--set`` key whose value it replaces: the whole key, or the first key
    on the way whose value is missing or not a mapping/list (``apply_overrides`` puts a new
    mapping there), so that problems with that new value are blamed on the ``--set``."""
    node = data
    for depth, part in enumerate(parts[:-1]):
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                return parts  # apply_overrides rejects it, naming the --set
            child = node[int(part)]
        else:
            child = node.get(part)
        if not isinstance(child, (dict, list)):
            return parts[:depth + 1]
        node = child
    return parts
