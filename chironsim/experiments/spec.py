"""Sweep specs: a base scenario and a grid of dotted-key values, expanded into validated points.

A spec is YAML, as strict as a scenario config::

    name: quickstart-policies
    base: ../../configs/quickstart.yaml      # relative to this file, or an inline mapping
    grid:
      policy: [static, {kind: reactive, target: 0.6}]      # mappings, kinds or variant names
      workload.streams.0.arrival.rate: [2.0, 4.0]
    variants:                                # named partial overrides: one more axis, 'variant'
      small-batch: {cluster.engine.max_num_seqs: 32}
    replications: 3                          # seeds base_seed .. base_seed+2 (or grid: seed)
    metrics: [slo_attainment, ttft_p99]      # summary columns to aggregate

Every point's config is validated here, before anything runs, so a typo in one grid value
fails the whole sweep up front with ``FILE:LINE: grid.KEY = VALUE: key.path: problem`` rather
than after an hour of runs. Each point is identified by a hash of its resolved config and of
the content of every file it reads (the scenario fingerprint,
:mod:`chironsim.experiments.fingerprint`), so the same scenario always lands in the same
results folder, which is what makes resuming safe, and editing a trace reruns exactly the
points that read it. Each distinct file is hashed once per sweep, however many points read it.

Two grid points that are the same scenario are an error naming the spec line of the value
that repeats it: they would be one run counted twice (two "seeds" with a zero-width interval).
The size of every part of the spec and the number of points are bounded
(:mod:`chironsim.experiments.spec_limits`) before anything is expanded.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, field_validator

from chironsim.config_base import StrictModel, check_result_name
from chironsim.errors import ConfigError
from chironsim.experiments.config import ScenarioConfig, validate_scenario
from chironsim.experiments.fingerprint import config_json, file_digest
from chironsim.experiments.messages import KeyPath, dotted
from chironsim.experiments.spec_limits import MAX_POINTS, oversized_parts
from chironsim.experiments.yaml_source import Locator, read_yaml, yaml_line
from chironsim.metrics.summary import SUMMARY_SCHEMA
from chironsim.metrics.tables import FLOAT, INT

#: Summary columns aggregated when a spec does not say: attainment, the latencies people quote,
#: and the two cost columns.
DEFAULT_METRICS = ("slo_attainment", "ttft_p50", "ttft_p99", "tpot_p50", "tpot_p99", "e2e_p99",
                   "gpu_hours", "goodput_tokens_per_gpu_hour")
#: Summary columns that can be averaged over replications.
NUMERIC_METRICS = tuple(name for name, kind in SUMMARY_SCHEMA if kind in (INT, FLOAT))

POLICY_AXIS = "policy"
VARIANT_AXIS = "variant"
SEED_AXIS = "seed"
#: Hex digits of the config hash kept as the point id: 64 bits, collision-free for any sweep.
POINT_ID_HEX = 16

_KEY = re.compile(r"[^.\[\]\s]+(?:\[\d+\])*(?:\.[^.\[\]\s]+(?:\[\d+\])*)*")


class SweepSpec(StrictModel):
    """The schema of a sweep file (see the module docstring)."""

    name: str
    base: str | dict[str, Any]
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    variants: dict[str, dict[str, Any]] = Field(default_factory=dict)
    replications: int | None = Field(None, ge=1, le=MAX_POINTS)
    metrics: tuple[str, ...] = DEFAULT_METRICS

    @field_validator("name")
    @classmethod
    def _safe_name(cls, name: str) -> str:
        """The sweep writes ``results/<name>`` unless ``--out`` says otherwise: one safe folder."""
        return check_result_name(name)


@dataclass(frozen=True)
class SpecSource:
    """Where a spec came from: for error messages (file and YAML nodes) and relative paths."""

    source: str = "<spec>"
    folder: Path = field(default_factory=Path.cwd)
    root: yaml.Node | None = None
    text: str | None = None


@dataclass(frozen=True)
class Point:
    """One grid point: its coordinates (axis → value as shown in tables), validated config, id
    and the SHA-256 of each file it reads (config key → digest), which the id covers."""

    coords: dict[str, Any]
    config: ScenarioConfig
    point_id: str
    inputs: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SweepPlan:
    """A spec expanded: axes in order, every point, and the folder relative paths resolve in."""

    spec: SweepSpec
    source: SpecSource
    axes: tuple[str, ...]
    points: tuple[Point, ...]
    base_dir: Path

    @property
    def metrics(self) -> tuple[str, ...]:
        return self.spec.metrics


# ----------------------------------------------------------------------------- loading


def load_spec(path: str | Path) -> tuple[SweepSpec, SpecSource]:
    """Read and validate a sweep file's schema (the points are checked by :func:`expand`)."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: sweep spec not found")
    if not path.is_file():
        raise ConfigError(f"{path}: is not a file; expected a sweep spec YAML file")
    data, root = read_yaml(path)
    source = SpecSource(str(path), path.parent, root, path.read_text(encoding="utf-8"))
    return parse_spec(data, source), source


def parse_spec(data: Any, source: SpecSource | None = None) -> SweepSpec:
    """Validate a spec mapping; errors read ``FILE:LINE: key.path: problem``."""
    source = source or SpecSource()
    where = Locator(source.source, source.root)
    if not isinstance(data, dict):
        kind = "nothing" if data is None else type(data).__name__
        raise ConfigError(f"{source.source}: expected a mapping of sweep keys, got {kind}")
    too_big = oversized_parts(data)
    if too_big:
        raise where.report(too_big)
    try:
        spec = SweepSpec.model_validate(data)
    except ValidationError as err:
        problems = dict.fromkeys(_describe_spec_error(e) for e in err.errors())  # base: 2 members
        raise where.report(list(problems)) from None
    problems = _spec_problems(spec)
    if problems:
        raise where.report(problems)
    return spec


def _describe_spec_error(error: Any) -> tuple[KeyPath, str]:
    loc = tuple(error["loc"])
    if loc[:1] == ("base",):
        return ("base",), "must be a path to a scenario YAML file or a mapping of config keys"
    if error["type"] == "extra_forbidden":
        allowed = sorted(SweepSpec.model_fields)
        return loc, f"unknown key (expected one of: {', '.join(allowed)})"
    if error["type"] == "missing":
        return loc, "required key is missing"
    msg = error["msg"].removeprefix("Value error, ")
    msg = re.sub(r"^(Input|String|List|Tuple|Dictionary|Value) should", "must", msg)
    return loc, msg


def _spec_problems(spec: SweepSpec) -> list[tuple[KeyPath, str]]:
    problems: list[tuple[KeyPath, str]] = []
    for key, values in spec.grid.items():
        if not _KEY.fullmatch(key):
            problems.append((("grid", key), "is not a dotted key path, e.g. "
                             "cluster.pools.default.instances or workload.streams.0.rate_scale"))
        elif not values:
            problems.append((("grid", key), "has no values; give at least one or remove the key"))
        problems += _repeated_values(key, values)
    if spec.replications is not None and SEED_AXIS in spec.grid:
        problems.append((("replications",), "give either replications or grid.seed, not both"))
    if VARIANT_AXIS in spec.grid:
        if not spec.variants:
            problems.append((("grid", VARIANT_AXIS), "names variants but the spec defines none "
                             "under 'variants'"))
        for i, name in enumerate(spec.grid[VARIANT_AXIS]):
            if spec.variants and name not in spec.variants:
                problems.append((("grid", VARIANT_AXIS, i),
                                 f"unknown variant {name!r} (defined: {', '.join(spec.variants)})"))
    for name, overrides in spec.variants.items():
        if not overrides:
            problems.append((("variants", name), "is empty; give at least one dotted key: value"))
        for key in overrides:
            if not _KEY.fullmatch(key):
                problems.append((("variants", name, key), "is not a dotted key path"))
    for i, metric in enumerate(spec.metrics):
        if metric not in NUMERIC_METRICS:
            problems.append((("metrics", i), f"{metric!r} is not a numeric summary column "
                             f"(expected one of: {', '.join(NUMERIC_METRICS)})"))
    return problems


def _repeated_values(key: str, values: list[Any]) -> list[tuple[KeyPath, str]]:
    """A value given twice on one axis: the same run would count as two points."""
    first: dict[str, int] = {}
    problems: list[tuple[KeyPath, str]] = []
    for i, value in enumerate(values):
        text = json.dumps(value, sort_keys=True, default=str)
        if text in first:
            problems.append((("grid", key, i), f"repeats entry {first[text]} ({_compact(value)}); "
                             "each value of an axis must differ (for repeated runs of one "
                             "scenario use replications or grid.seed)"))
        else:
            first[text] = i
    return problems


# ----------------------------------------------------------------------------- expansion


@dataclass(frozen=True)
class _Assignment:
    """One axis value: the dotted keys it sets and how tables show it."""

    axis: str
    label: Any
    sets: tuple[tuple[str, Any], ...]
    spec_path: KeyPath  # where in the spec file it is written, for error lines


def expand(spec: SweepSpec, source: SpecSource | None = None) -> SweepPlan:
    """Every grid point, resolved and validated; raises one ConfigError listing every problem."""
    source = source or SpecSource()
    base, base_dir, base_where = _load_base(spec, source)
    axes = _axes(spec, base)
    _check_point_count(axes, source)
    problems: dict[str, None] = {}  # ordered set: many points share one bad value
    points: list[Point] = []
    digests: dict[Path, str] = {}  # each input file hashed once per sweep
    seen: dict[str, tuple[Any, ...]] = {}  # point id → the combo that made it first
    for combo in itertools.product(*axes):
        data = copy.deepcopy(base)
        try:
            for assignment in combo:
                for key, value in assignment.sets:
                    set_dotted(data, key, copy.deepcopy(value))
        except ConfigError as err:
            problems[f"{_spec_line(source, assignment.spec_path[:2])}: {err}"] = None
            continue
        coords = {a.axis: a.label for a in combo}
        locator = _PointLocator(source, combo, base_where, coords)
        try:
            config = validate_scenario(data, locator, base_dir)
        except ConfigError as err:
            problems.update(dict.fromkeys(locator.lines or [str(err)]))
            continue
        try:
            pid, inputs = point_identity(config, base_dir, digests)
        except ConfigError as err:
            problems[f"{locator.source}: {err}"] = None
            continue
        if pid in seen:
            problems[_duplicate_point(source, seen[pid], combo)] = None
            continue
        seen[pid] = combo
        points.append(Point(coords, config, pid, inputs))
    if problems:
        lines = list(problems)
        if len(lines) == 1:
            raise ConfigError(lines[0])
        raise ConfigError("\n  ".join([f"{source.source}: {len(lines)} problems in the sweep's "
                                       "grid points", *lines]))
    return SweepPlan(spec, source, tuple(a[0].axis for a in axes), tuple(points), base_dir)


def point_identity(config: ScenarioConfig, base_dir: Path,
                   digests: dict[Path, str] | None = None) -> tuple[str, dict[str, str]]:
    """A point's id and input digests: the scenario fingerprint, shortened.

    The id equals ``scenario_fingerprint(config, base_dir)[:16]``: a hash of the canonical
    config JSON and of each input file's SHA-256. ``digests`` (resolved path → SHA-256) is the
    sweep's cache, so a trace read by a hundred points is hashed once.
    """
    from chironsim.workload.build import workload_files

    cache = {} if digests is None else digests
    inputs: dict[str, str] = {}
    for key, path, *_ in workload_files(config.workload, base_dir):
        resolved = path.resolve()
        if resolved not in cache:
            cache[resolved] = file_digest(resolved)
        inputs[key] = cache[resolved]
    payload = {"config": config_json(config), "inputs": inputs}
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:POINT_ID_HEX], inputs


def _check_point_count(axes: list[list[_Assignment]], source: SpecSource) -> None:
    count = math.prod(len(axis) for axis in axes)
    if count > MAX_POINTS:
        sizes = " × ".join(f"{len(axis)} {axis[0].axis}" for axis in axes)
        raise ConfigError(f"{_spec_line(source, ('grid',))}: the sweep has {count:,} grid points "
                          f"({sizes}); at most {MAX_POINTS:,} are allowed, each is a run")


def _duplicate_point(source: SpecSource, first: Sequence[_Assignment],
                     again: Sequence[_Assignment]) -> str:
    """Where a point that repeats an earlier one's scenario comes from, and which one it repeats."""
    differ = [b for a, b in zip(first, again) if a is not b]
    where = _spec_line(source, differ[0].spec_path) if differ else source.source

    def show(combo: Sequence[_Assignment]) -> str:
        return ", ".join(f"{a.axis}={_compact(a.label)}" for a in combo)

    return (f"{where}: grid point ({show(again)}) is the same scenario as ({show(first)}); "
            "each point must be a different run (remove one of the values, or use "
            "replications for repeated runs)")


def _load_base(spec: SweepSpec, source: SpecSource) -> tuple[dict[str, Any], Path, Locator]:
    """The base scenario as a mapping, the folder its paths resolve in, and its locator."""
    if isinstance(spec.base, dict):
        return copy.deepcopy(spec.base), source.folder, _PrefixLocator(source, ("base",))
    path = Path(spec.base)
    path = path if path.is_absolute() else source.folder / path
    line = _spec_line(source, ("base",))
    if not path.is_file():
        raise ConfigError(f"{line}: scenario file {path} "
                          f"{'is not a file' if path.exists() else 'not found'}")
    data, root = read_yaml(path)
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys, got {type(data).__name__}")
    where = Locator(str(path), root)
    too_big = oversized_parts(data, "scenario")
    if too_big:
        raise where.report(too_big)
    return data, path.parent, where


def _axes(spec: SweepSpec, base: dict[str, Any]) -> list[list[_Assignment]]:
    """The axes in table order: grid keys as written, then ``variant``, then ``seed``."""
    axes: list[list[_Assignment]] = []
    policy_uses_variants = False
    for key, values in spec.grid.items():
        if key == VARIANT_AXIS:
            axes.append([_variant(spec, name, ("grid", VARIANT_AXIS, i))
                         for i, name in enumerate(values)])
            continue
        if key == POLICY_AXIS:
            policy_uses_variants = any(isinstance(v, str) and v in spec.variants for v in values)
        labels = _labels(key, values, spec)
        axis = []
        for i, (value, label) in enumerate(zip(values, labels)):
            where = ("grid", key, i)
            if key == POLICY_AXIS and isinstance(value, str) and value in spec.variants:
                axis.append(_Assignment(key, value, _variant(spec, value, where).sets, where))
            elif key == POLICY_AXIS and isinstance(value, str):
                axis.append(_Assignment(key, label, ((key, {"kind": value}),), where))
            else:
                axis.append(_Assignment(key, label, ((key, value),), where))
        axes.append(axis)
    if spec.variants and VARIANT_AXIS not in spec.grid and not policy_uses_variants:
        axes.append([_variant(spec, name, ("variants", name)) for name in spec.variants])
    if spec.replications is not None:
        first = base.get(SEED_AXIS, 0)
        first = first if isinstance(first, int) and not isinstance(first, bool) else 0
        axes.append([_Assignment(SEED_AXIS, s, ((SEED_AXIS, s),), ("replications",))
                     for s in range(first, first + spec.replications)])
    return axes


def _variant(spec: SweepSpec, name: str, where: KeyPath) -> _Assignment:
    return _Assignment(VARIANT_AXIS, name, tuple(spec.variants[name].items()), where)


def _labels(key: str, values: Sequence[Any], spec: SweepSpec) -> list[Any]:
    """How each value appears in tables: numbers and strings as they are, a policy as its kind
    (with its settings where two share a kind), anything else as compact JSON."""
    if key != POLICY_AXIS:
        return [v if _is_scalar(v) else _compact(v) for v in values]
    kinds = [v.get("kind", _compact(v)) if isinstance(v, dict) else v for v in values]
    labels = []
    for kind, v in zip(kinds, values):
        if isinstance(v, dict) and kinds.count(kind) > 1:
            rest = ", ".join(f"{k}={_compact(x)}" for k, x in v.items() if k != "kind")
            labels.append(f"{kind}({rest})")
        else:
            labels.append(kind)
    return labels


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


def _compact(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True,
                                                           separators=(",", ":"))


# ----------------------------------------------------------------------------- dotted keys


def set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    """Set ``a.b.0.c`` (or ``a.b[0].c``) in nested mappings and lists, creating missing mappings."""
    parts: list[str] = re.findall(r"[^.\[\]]+", key)
    node: Any = data
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        if isinstance(node, list):
            where = dotted(tuple(int(p) if p.isdigit() else p for p in parts[:depth]))
            if not part.isdigit():
                raise ConfigError(f"{key}: {where} is a list; {part!r} must be an index")
            if int(part) >= len(node):
                raise ConfigError(f"{key}: {where} has {len(node)} "
                                  f"{'entry' if len(node) == 1 else 'entries'}; "
                                  f"index {part} is out of range")
            index: Any = int(part)
        elif isinstance(node, dict):
            index = part
            if not last and not isinstance(node.get(part), (dict, list)):
                node[part] = {}
        else:
            raise ConfigError(f"{key}: {'.'.join(parts[:depth])} is a value, not a mapping")
        if last:
            node[index] = value
        else:
            node = node[index]


def _key_path(key: str) -> tuple[str, ...]:
    return tuple(re.findall(r"[^.\[\]]+", key))


def _overlaps(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    n = min(len(a), len(b))
    return a[:n] == b[:n]


# ----------------------------------------------------------------------------- messages


def _spec_line(source: SpecSource, path: KeyPath) -> str:
    line = yaml_line(source.root, path) if source.root is not None else None
    here = f"{source.source}:{line}" if line else source.source
    return f"{here}: {dotted(path)}" if path else here


class _PrefixLocator(Locator):
    """Locates keys of an inline base: ``base.cluster.gpu`` in the spec file."""

    def __init__(self, source: SpecSource, prefix: KeyPath) -> None:
        super().__init__(source.source, source.root)
        self.prefix = prefix

    def __call__(self, path: KeyPath) -> str:
        return super().__call__((*self.prefix, *path))


class _PointLocator(Locator):
    """Blames a problem in a point's config on the grid value (or variant) that set the key.

    A problem at a key no axis touches comes from the base scenario and is located there. A
    problem at the grid key itself (an unknown key) does not depend on the value, so the value
    is left out and the problem is reported once for the whole axis. :meth:`report` keeps the
    located lines so that :func:`expand` can merge the same problem across points.
    """

    def __init__(self, source: SpecSource, combo: Sequence[_Assignment], base: Locator,
                 coords: dict[str, Any]) -> None:
        point = ", ".join(f"{k}={v}" for k, v in coords.items())
        super().__init__(f"{source.source}: grid point ({point})")
        self.spec_source = source
        self.combo = combo
        self.base = base
        self.lines: list[str] = []

    def __call__(self, path: KeyPath) -> str:
        return self.locate(path, with_value=True)

    def locate(self, path: KeyPath, with_value: bool) -> str:
        target = tuple(str(p) for p in path)
        for a in self.combo:
            keys = [_key_path(key) for key, _ in a.sets]
            if not any(_overlaps(k, target) for k in keys):
                continue
            if a.spec_path[0] != "grid":  # a variant, or the seeds of replications
                return _spec_line(self.spec_source, a.spec_path)
            if not with_value and all(len(target) <= len(k) for k in keys):
                return _spec_line(self.spec_source, a.spec_path[:2])
            shown = repr(a.label) if _is_scalar(a.label) else _compact(a.label)
            return f"{_spec_line(self.spec_source, a.spec_path)} = {shown}"
        return self.base(path)

    def report(self, problems: list[tuple[KeyPath, str]]) -> ConfigError:
        # An unknown key named by the grid key itself is wrong whatever the value: say it once.
        self.lines = [f"{self.locate(path, not msg.startswith('unknown key'))}: "
                      f"{dotted(path) + ': ' if path else ''}{msg}" for path, msg in problems]
        return super().report(problems)
