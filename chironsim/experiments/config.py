"""The scenario config: one YAML file describes a whole run, validated at the boundary.

Everything past :func:`load_config` trusts its inputs. Errors name the file, the dotted key
path and what was expected, and become exit status 2 in the CLI.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, model_validator

from chironsim.catalog import get_gpu, get_model
from chironsim.config_base import StrictModel
from chironsim.errors import ChironError, ConfigError
from chironsim.metrics.slo import RequestClassSpec
from chironsim.policies.registry import PolicyConfig
from chironsim.policies.static import StaticPolicyConfig
from chironsim.sim.config import ClusterConfig
from chironsim.workload.config import WorkloadConfig


class OutputConfig(StrictModel):
    """What the CLI writes besides the tables."""

    format: str = Field("parquet", pattern="^(parquet|csv)$")
    plots: bool = True


class ScenarioConfig(StrictModel):
    """One simulated scenario: traffic, cluster, policy and the observation window."""

    name: str = "scenario"
    seed: int = Field(0, ge=0)
    duration_s: float | None = Field(
        None, gt=0, description="observation window: arrivals at or after it are dropped and "
        "instances are billed at least until it; None = until the workload ends")
    drain_s: float = Field(600.0, ge=0, description="time after the window (or last arrival) "
                           "for in-flight requests to finish; the rest are 'unfinished'")
    sample_interval_s: float = Field(1.0, gt=0, description="timeseries sampling period")
    classes: dict[str, RequestClassSpec] = Field(
        default_factory=lambda: {"default": RequestClassSpec()})
    workload: WorkloadConfig
    cluster: ClusterConfig = ClusterConfig()
    policy: PolicyConfig = StaticPolicyConfig(kind="static")
    output: OutputConfig = OutputConfig()

    @model_validator(mode="after")
    def _cross_references(self) -> "ScenarioConfig":
        if "all" in self.classes:
            raise ValueError("'all' is reserved for the summary's all-classes row; rename the class")
        for i, stream in enumerate(self.workload.streams):
            if stream.request_class not in self.classes:
                raise ValueError(
                    f"workload.streams[{i}].request_class {stream.request_class!r} is not one of "
                    f"the classes {sorted(self.classes)}")
        scaled = getattr(self.policy, "pools", None) or ()
        for name in scaled:
            if name not in self.cluster.pools:
                raise ValueError(f"policy.pools: unknown pool {name!r} (cluster.pools has "
                                 f"{sorted(self.cluster.pools)})")
        for name, pool in self.cluster.pools.items():
            for cls in pool.classes or []:
                if cls not in self.classes:
                    raise ValueError(f"cluster.pools.{name}.classes: unknown class {cls!r}")
        return self


def _format_validation_error(err: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid configuration"]
    for e in err.errors():
        path = ".".join(str(p) for p in e["loc"] if not str(p).startswith("function-after"))
        msg = e["msg"].removeprefix("Value error, ")
        given = e.get("input")
        shown = "" if isinstance(given, (dict, list)) or given is None else f" (got {given!r})"
        lines.append(f"  {path or '<root>'}: {msg}{shown}")
    return "\n".join(lines)


def apply_overrides(data: dict[str, Any], overrides: list[str], source: str) -> dict[str, Any]:
    """Apply ``--set a.b.c=value`` overrides; values are parsed as YAML (``4``, ``true``, ``[1,2]``)."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. cluster.pools.default.instances=8")
        key, raw = item.split("=", 1)
        value = yaml.safe_load(raw)
        node: Any = data
        parts = key.strip().split(".")
        for depth, part in enumerate(parts[:-1]):
            if isinstance(node, list):
                node = node[_index(part, key, source)]
                continue
            if part not in node or not isinstance(node[part], (dict, list)):
                node[part] = {}
            node = node[part]
        last = parts[-1]
        if isinstance(node, list):
            node[_index(last, key, source)] = value
        else:
            node[last] = value
    return data


def _index(part: str, key: str, source: str) -> int:
    try:
        return int(part)
    except ValueError:
        raise ConfigError(f"--set {key}: {part!r} must be a list index") from None


def parse_config(data: Any, source: str = "<config>", base_dir: Path | None = None) -> ScenarioConfig:
    """Validate a config mapping; names, files and classes are checked before anything runs."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of config keys, got {type(data).__name__}")
    try:
        config = ScenarioConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, source)) from None
    try:
        get_model(config.cluster.model)
        get_gpu(config.cluster.gpu)
        for name, pool in config.cluster.pools.items():
            if pool.model:
                get_model(pool.model)
            if pool.gpu:
                get_gpu(pool.gpu)
    except ChironError as err:
        raise ConfigError(f"{source}: cluster: {err}") from None
    if base_dir is not None:
        from chironsim.workload.build import check_workload_files

        try:
            check_workload_files(config.workload, base_dir)
        except ChironError as err:
            raise ConfigError(f"{source}: {err}") from None
    return config


def load_config(path: str | Path, overrides: list[str] | None = None) -> tuple[ScenarioConfig, Path]:
    """Read, override and validate a YAML scenario; returns it with the directory paths resolve against."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: not valid YAML ({getattr(err, 'problem', err)})") from None
    data = apply_overrides(data or {}, overrides or [], str(path))
    return parse_config(data, str(path), path.parent), path.parent
