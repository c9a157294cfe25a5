"""The scenario config: one YAML file describes a whole run, validated at the boundary.

Everything past :func:`load_config` trusts its inputs: the schema, the cross references
(classes, pools), the catalog names, whether each pool's model fits its GPUs, and the files the
workload reads (existence and header) are all checked here, before anything runs. Each problem
is reported as ``FILE:LINE: dotted.key[0].path: what is wrong and what was expected`` and
becomes exit status 2 in the CLI. Only a trace's *body* is read later, while it streams; a
malformed line there raises TraceFormatError naming the file and line.
"""

from __future__ import annotations

import difflib
import re
import types
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import Field, ValidationError, ValidationInfo, model_validator

from chironsim.catalog import get_gpu, get_model
from chironsim.config_base import StrictModel
from chironsim.errors import ChironError, ConfigError
from chironsim.metrics.slo import RequestClassSpec
from chironsim.perf.memory import kv_capacity_blocks
from chironsim.policies.registry import PolicyConfig
from chironsim.policies.static import StaticPolicyConfig
from chironsim.sim.config import ClusterConfig
from chironsim.workload.config import WorkloadConfig

KeyPath = tuple[str | int, ...]
_GIB = 2**30
# Validation context flag: cross references are then checked by parse_config, which can
# point at the offending key, instead of by the model validator, which can only say "<root>".
_DEFER_CROSS_REFERENCES = "defer_cross_references"


class OutputConfig(StrictModel):
    """What the CLI writes besides the tables."""

    format: Literal["parquet", "csv"] = "parquet"
    plots: bool = True


class ScenarioConfig(StrictModel):
    """One simulated scenario: traffic, cluster, policy and the observation window."""

    name: str = "scenario"
    seed: int = Field(0, ge=0)
    duration_s: float | None = Field(
        None, gt=0, allow_inf_nan=False,
        description="observation window: arrivals at or after it are dropped and instances "
        "are billed at least until it; None = until the workload ends")
    drain_s: float = Field(600.0, ge=0, allow_inf_nan=False,
                           description="time after the window (or last arrival) for in-flight "
                           "requests to finish; the rest are 'unfinished'")
    sample_interval_s: float = Field(1.0, gt=0, allow_inf_nan=False,
                                     description="timeseries sampling period")
    classes: dict[str, RequestClassSpec] = Field(
        default_factory=lambda: {"default": RequestClassSpec()})
    workload: WorkloadConfig
    cluster: ClusterConfig = ClusterConfig()
    policy: PolicyConfig = StaticPolicyConfig(kind="static")
    output: OutputConfig = OutputConfig()

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
                f"{_did_you_mean(name, declared)} (declared: {', '.join(declared)})")

    if "all" in config.classes:
        problems.append((("classes", "all"),
                         "'all' is reserved for the summary's all-classes row; rename the class"))
    for i, stream in enumerate(config.workload.streams):
        if stream.request_class not in config.classes:
            implicit = "request_class" not in stream.model_fields_set
            problems.append((("workload", "streams", i, "request_class"),
                             unknown_class(stream.request_class, implicit)))
    pools = sorted(config.cluster.pools)
    for name in getattr(config.policy, "pools", None) or ():
        if name not in config.cluster.pools:
            problems.append((("policy", "pools"), f"unknown pool {name!r}"
                             f"{_did_you_mean(name, pools)} (cluster.pools has: {', '.join(pools)})"))
    for name, pool in config.cluster.pools.items():
        for cls in pool.classes or []:
            if cls not in config.classes:
                problems.append((("cluster", "pools", name, "classes"), unknown_class(cls)))
    return problems


# ----------------------------------------------------------------------------- messages


def dotted(path: Sequence[str | int]) -> str:
    """``("workload", "streams", 0, "path")`` → ``workload.streams[0].path``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _did_you_mean(name: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=2, cutoff=0.6)
    return f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


def _members(annotation: Any) -> list[Any]:
    """The types a field annotation admits, with Annotated and unions unwrapped."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _members(get_args(annotation)[0])
    if origin is Union or origin is types.UnionType:
        return [m for arg in get_args(annotation) for m in _members(arg)]
    return [annotation]


def _tag(member: Any) -> str | None:
    """The ``kind`` a model answers to in a discriminated union, if it has exactly one."""
    field = getattr(member, "model_fields", {}).get("kind")
    if field is None or get_origin(field.annotation) is not Literal:
        return None
    tags = get_args(field.annotation)
    return tags[0] if len(tags) == 1 else None


def _walk(loc: Sequence[str | int]) -> tuple[KeyPath, list[Any]]:
    """Follow a pydantic error location through the schema.

    Returns the key path as the user wrote it — without the union-member names pydantic puts
    in (``synthetic`` and ``poisson`` in ``workload.streams.0.synthetic.arrival.poisson.rate``)
    — and the types allowed at its end (for listing the keys a mapping accepts).
    """
    path: list[str | int] = []
    here: list[Any] = [ScenarioConfig]
    for part in loc:
        if isinstance(part, str) and part.startswith("function-"):
            continue
        tagged = [t for t in here if _tag(t) == part]
        if len(here) > 1 and tagged:
            here = tagged
            continue
        path.append(part)
        below: list[Any] = []
        for t in here:
            fields = getattr(t, "model_fields", None)
            origin, args = get_origin(t), get_args(t)
            if fields is not None:
                below += _members(fields[part].annotation) if part in fields else []
            elif origin is dict and len(args) == 2:
                below += _members(args[1])
            elif origin in (list, tuple) and args and isinstance(part, int):
                below += _members(args[0])
        here = below
    return tuple(path), here


_SHORT = {
    "missing": "required key is missing",
    "float_type": "must be a number", "float_parsing": "must be a number",
    "int_type": "must be a whole number", "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "bool_type": "must be true or false", "bool_parsing": "must be true or false",
    "string_type": "must be a string",
    "finite_number": "must be a finite number",
    "model_type": "must be a mapping of keys", "model_attributes_type": "must be a mapping of keys",
    "dict_type": "must be a mapping of keys", "list_type": "must be a list",
}


def _shown(value: Any) -> str:
    if value is None or isinstance(value, (dict, list)):
        return ""
    text = repr(value)
    return f" (got {text if len(text) <= 60 else text[:57] + '...'})"


def _describe(error: Any) -> tuple[KeyPath, str]:
    """One pydantic error as (the user's key path, a sentence saying what was expected)."""
    kind, loc, ctx = error["type"], error["loc"], error.get("ctx") or {}
    if kind == "extra_forbidden":
        parent, allowed_here = _walk(loc[:-1])
        allowed = sorted({k for t in allowed_here for k in getattr(t, "model_fields", {})})
        key = str(loc[-1])
        listing = f" (expected one of: {', '.join(allowed)})" if allowed else ""
        return (*parent, key), f"unknown key{_did_you_mean(key, allowed)}{listing}"
    path, here = _walk(loc)
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        tags = [t for t in map(_tag, here) if t] or re.findall(r"'([^']*)'", ctx.get("expected_tags", ""))
        expected = f"(expected one of: {', '.join(tags)})"
        if kind == "union_tag_not_found":
            return path, f"needs a 'kind' {expected}"
        tag = str(ctx.get("tag"))
        return (*path, "kind"), f"unknown kind {tag!r}{_did_you_mean(tag, tags)} {expected}"
    if kind == "too_short":
        least = ctx.get("min_length")
        return path, f"needs at least {least} {'entry' if least == 1 else 'entries'} (got {ctx.get('actual_length')})"
    if kind in _SHORT:
        return path, _SHORT[kind] + ("" if kind == "missing" else _shown(error.get("input")))
    msg = error["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
    msg = re.sub(r"^(Input|String|List|Tuple|Dictionary|Value) should", "must", msg)
    return path, msg + _shown(error.get("input"))


class _Locator:
    """Says where a key came from: ``FILE:LINE`` of its YAML, or the ``--set`` that made it."""

    def __init__(self, source: str, root: yaml.Node | None = None,
                 overrides: dict[str, str] | None = None) -> None:
        self.source = source
        self.root = root
        self.overrides = overrides or {}

    def __call__(self, path: KeyPath) -> str:
        key = dotted(path)
        for set_key, item in self.overrides.items():
            if key == set_key or key.startswith((set_key + ".", set_key + "[")):
                return f"--set {item}"
        line = _yaml_line(self.root, path) if self.root is not None else None
        return f"{self.source}:{line}" if line else self.source

    def report(self, problems: list[tuple[KeyPath, str]]) -> ConfigError:
        """One ConfigError listing every problem, each prefixed by where it is."""
        lines = [f"{self(path)}: {dotted(path) + ': ' if path else ''}{msg}" for path, msg in problems]
        if len(lines) == 1:
            return ConfigError(lines[0])
        head = f"{self.source}: {len(lines)} problems in the configuration"
        return ConfigError("\n  ".join([head, *lines]))


def _yaml_line(root: yaml.Node, path: KeyPath) -> int | None:
    """Line of the deepest key of ``path`` present in the YAML (its parent's, for a missing key)."""
    node, line = root, None
    for part in path:
        if isinstance(node, yaml.MappingNode):
            hit = next(((k, v) for k, v in node.value if getattr(k, "value", None) == str(part)), None)
            if hit is None:
                break
            line, node = hit[0].start_mark.line + 1, hit[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


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
            last = depth == len(parts) - 1
            if isinstance(node, list):
                where = dotted(_typed(parts[:depth]))
                if not part.isdigit():
                    raise ConfigError(f"--set {item}: {where} is a list; {part!r} must be an index")
                if int(part) >= len(node):
                    entries = "entry" if len(node) == 1 else "entries"
                    raise ConfigError(f"--set {item}: {where} has {len(node)} {entries}; "
                                      f"index {part} is out of range")
                index: Any = int(part)
            else:
                index = part
                if not last and not isinstance(node.get(part), (dict, list)):
                    node[part] = {}
            if last:
                node[index] = value
            else:
                node = node[index]
    return data


def _typed(parts: Sequence[str]) -> KeyPath:
    return tuple(int(p) if p.isdigit() else p for p in parts)


# ----------------------------------------------------------------------------- validation


def parse_config(data: Any, source: str = "<config>", base_dir: Path | None = None) -> ScenarioConfig:
    """Validate a config mapping; names, files, classes and memory fit are checked before anything runs."""
    return _validate(data, _Locator(source), base_dir)


def _validate(data: Any, where: _Locator, base_dir: Path | None) -> ScenarioConfig:
    if not isinstance(data, dict):
        raise ConfigError(f"{where.source}: expected a mapping of config keys, got {type(data).__name__}")
    try:
        config = ScenarioConfig.model_validate(data, context={_DEFER_CROSS_REFERENCES: True})
    except ValidationError as err:
        raise where.report([_describe(e) for e in err.errors()]) from None
    problems = cross_reference_problems(config) + _hardware_problems(config.cluster)
    if problems:
        raise where.report(problems)
    if base_dir is not None:
        from chironsim.workload.build import check_workload_files

        try:
            check_workload_files(config.workload, base_dir)
        except ChironError as err:
            raise ConfigError(f"{where.source}: {err}") from None
    return config


def _hardware_problems(cluster: ClusterConfig) -> list[tuple[KeyPath, str]]:
    """Unknown GPU or model names, and pools whose model leaves no room for a KV block.

    The fit check is the one the cluster makes when it builds the pool (same engine settings),
    done here so that it fails before the run rather than when the simulation starts.
    """
    problems: list[tuple[KeyPath, str]] = []

    def look_up(get: Callable[[str], Any], name: str, key: KeyPath) -> Any:
        try:
            return get(name)
        except ChironError as err:
            problems.append((key, str(err)))
            return None

    default_gpu = look_up(get_gpu, cluster.gpu, ("cluster", "gpu"))
    default_model = look_up(get_model, cluster.model, ("cluster", "model"))
    for name, pool in cluster.pools.items():
        key: KeyPath = ("cluster", "pools", name)
        gpu = look_up(get_gpu, pool.gpu, (*key, "gpu")) if pool.gpu else default_gpu
        model = look_up(get_model, pool.model, (*key, "model")) if pool.model else default_model
        if gpu is None or model is None:
            continue
        engine = pool.engine or cluster.engine
        reserve = None if engine.activation_reserve_gb is None else int(engine.activation_reserve_gb * _GIB)
        try:
            kv_capacity_blocks(model, gpu, pool.tp, engine.gpu_memory_utilization,
                               engine.block_size, reserve)
        except ChironError as err:
            problems.append((key, str(err)))
    return problems


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key != "<<" and key in seen:
                raise ConfigError(f"{self.name}:{line}: key {key!r} is given twice "
                                  f"(first on line {seen[key]})")
            seen[key] = line
        return super().construct_mapping(node, deep)


def _read_yaml(path: Path) -> tuple[Any, yaml.Node | None]:
    """The file's data and its node tree (for line numbers); errors name the file and line."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read the config file ({err})") from None
    try:
        loader = _StrictLoader(text)
        loader.name = str(path)
        try:
            root = loader.get_single_node()
            data = None if root is None else loader.construct_document(root)
        finally:
            loader.dispose()
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: not valid YAML ({getattr(err, 'problem', None) or err})") from None
    return data, root


def load_config(path: str | Path, overrides: list[str] | None = None) -> tuple[ScenarioConfig, Path]:
    """Read, override and validate a YAML scenario; returns it with the directory paths resolve against."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: config file not found")
    if not path.is_file():
        raise ConfigError(f"{path}: is not a file; expected a scenario YAML file")
    data, root = _read_yaml(path)
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys, got {type(data).__name__}")
    overrides = overrides or []
    data = apply_overrides(data, overrides)
    set_keys = {dotted(_typed(_split_key(item.split("=", 1)[0].strip(), item))): item
                for item in overrides}
    return _validate(data, _Locator(str(path), root, set_keys), path.parent), path.parent
