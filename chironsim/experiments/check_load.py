"""Reading a regression file: validated, its scenario loaded, its record checked.

The format and the rules (tolerance bounds, the ``pinned:`` record) are described in
:mod:`chironsim.experiments.check`; everything here runs before anything is simulated, so a bad
or weakened file is a ConfigError naming the file, line and key and costs no simulation time.
"""

from __future__ import annotations

import copy
import difflib
import re
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, field_validator

from chironsim.config_base import StrictModel
from chironsim.errors import ConfigError
from chironsim.experiments import check_pin
from chironsim.experiments.compare import CLUSTER, CLUSTER_COLUMNS
from chironsim.experiments.config import (
    ScenarioConfig,
    apply_overrides,
    load_config,
    validate_scenario,
)
from chironsim.experiments.messages import dotted
from chironsim.experiments.yaml_source import Locator, read_yaml, yaml_line
from chironsim.metrics.summary import ALL, SUMMARY_SCHEMA
from chironsim.workload.build import workload_files

#: Per-class metrics a baseline may pin: every summary column that is not cluster-wide.
CLASS_METRICS = tuple(name for name, kind in SUMMARY_SCHEMA
                      if name != "request_class" and name not in CLUSTER_COLUMNS)
#: Metrics whose every possible value lies in a known range: a band at least half that wide
#: would, around some values, accept anything, so ``abs_tol`` must stay below half of it.
BOUNDED_METRICS: dict[str, tuple[float, float]] = {"slo_attainment": (0.0, 1.0)}
_TOP_KEYS = ("description", "scenario", "set", "baseline", check_pin.PIN_KEY)
_BAND_KEYS = ("value", "abs_tol", "rel_tol")


class Band(StrictModel):
    """One pinned number and how far it may move."""

    value: float
    abs_tol: float = Field(0.0, ge=0, allow_inf_nan=False)
    rel_tol: float = Field(0.0, ge=0, allow_inf_nan=False)

    @field_validator("value")
    @classmethod
    def _not_infinite(cls, value: float) -> float:
        # NaN stays allowed: it pins a metric the run leaves undefined, and passes only while
        # the metric stays undefined, so it cannot widen anything.
        if math.isinf(value):
            raise ValueError("must be a finite number (or .nan for a metric the run leaves "
                             "undefined)")
        return value

    @field_validator("rel_tol")
    @classmethod
    def _below_one(cls, rel_tol: float) -> float:
        if rel_tol >= 1:
            raise ValueError("must be below 1: a band of ±100 % of the value or more reaches "
                             "zero, so it could not notice the metric collapsing")
        return rel_tol

    def width(self, scale: float = 1.0) -> float:
        """Largest accepted ``|now − value|``."""
        rel = 0.0 if math.isnan(self.value) else self.rel_tol * abs(self.value)
        return max(self.abs_tol, rel) * scale

    def holds(self, now: float, scale: float = 1.0) -> bool:
        if math.isnan(self.value) or math.isnan(now):
            return math.isnan(self.value) and math.isnan(now)
        return abs(now - self.value) <= self.width(scale)


class RegressionSpec(StrictModel):
    """A regression file's keys."""

    description: str | None = None
    scenario: Any = Field(description="path to a scenario YAML (relative to the file) or inline")
    overrides: dict[str, Any] = Field(default_factory=dict, alias="set")
    baseline: dict[str, dict[str, Band]] | None = None
    #: Checked by :func:`verify_pinned` only when comparing: ``--update`` rewrites it anyway.
    pinned: Any = None


@dataclass(frozen=True)
class Regression:
    """A validated regression file with its scenario, ready to simulate."""

    path: Path
    spec: RegressionSpec
    config: ScenarioConfig
    base_dir: Path
    root: yaml.Node | None = field(default=None, compare=False, repr=False)  # for line numbers

    @property
    def name(self) -> str:
        return self.path.stem

    @property
    def update_command(self) -> str:
        """The command that accepts this file's current results deliberately."""
        return f"chironsim check {self.path} --update"


# ----------------------------------------------------------------------------- loading


def regression_files(path: str | os.PathLike[str]) -> list[Path]:
    """The file itself, or the ``*.yaml``/``*.yml`` files directly inside a folder, sorted.

    Subfolders are not searched, so scenario YAMLs that regression files refer to can live in
    one (e.g. ``configs/regression/scenarios/``) without being mistaken for regression files.
    """
    p = Path(path)
    if p.is_file():
        return [p]
    if p.is_dir():
        files = sorted(f for f in p.iterdir()
                       if f.suffix in (".yaml", ".yml") and f.is_file() and not f.name.startswith("."))
        if not files:
            raise ConfigError(f"{p}: no regression files (*.yaml) in this folder")
        return files
    raise ConfigError(f"{p}: regression file or folder not found")


def load_regression(path: str | os.PathLike[str]) -> Regression:
    """Read and validate a regression file and the scenario it names."""
    path = Path(path)
    data, root = read_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping with keys {', '.join(_TOP_KEYS)}")
    try:
        spec = RegressionSpec.model_validate(data)
    except ValidationError as err:
        raise _report(path, root, [_describe(e) for e in err.errors()]) from None
    config, base_dir = _load_scenario(path, root, spec)
    _check_baseline(path, root, spec, config)
    return Regression(path, spec, config, base_dir, root)


def _describe(error: Any) -> tuple[tuple, str]:
    loc, kind = tuple(error["loc"]), error["type"]
    if kind == "extra_forbidden":
        allowed = _BAND_KEYS if len(loc) == 4 else _TOP_KEYS
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return loc, f"unknown key{hint} (expected one of: {', '.join(allowed)})"
    if kind == "missing":
        if loc == ("scenario",):
            return loc, "missing: name a scenario YAML (relative to this file) or give it inline"
        return loc, "missing (required)"
    shown = error.get("input")
    got = "" if isinstance(shown, (dict, list)) or shown is None else f" (got {shown!r})"
    msg = re.sub(r"^(Input|Value) should", "must", error["msg"].removeprefix("Value error, "))
    if loc[:1] == ("baseline",) and kind in ("dict_type", "model_type"):
        msg = ("must map request class → metric → {value, abs_tol, rel_tol}"
               if len(loc) < 3 else "must be a mapping {value, abs_tol, rel_tol}")
    return loc, msg + got


def _report(path: Path, root: yaml.Node | None, problems: list[tuple[tuple, str]]) -> ConfigError:
    lines = []
    for loc, msg in problems:
        line = yaml_line(root, loc) if root is not None else None
        where = f"{path}:{line}" if line else str(path)
        lines.append(f"{where}: {dotted(loc) + ': ' if loc else ''}{msg}")
    if len(lines) == 1:
        return ConfigError(lines[0])
    return ConfigError("\n  ".join([f"{path}: {len(lines)} problems in the regression file", *lines]))


def _load_scenario(path: Path, root: yaml.Node | None,
                   spec: RegressionSpec) -> tuple[ScenarioConfig, Path]:
    # JSON is YAML, so every override value travels through --set's parser unchanged.
    overrides = [f"{key}={json.dumps(value)}" for key, value in spec.overrides.items()]
    if isinstance(spec.scenario, str):
        scenario_path = path.parent / spec.scenario
        if not scenario_path.is_file():
            raise _report(path, root, [(("scenario",), f"scenario file {scenario_path} not found")])
        try:
            return load_config(scenario_path, overrides)
        except ConfigError as err:
            # load_config attributes overridden keys to "--set KEY=VALUE"; here they come from set:
            text = str(err).replace("--set ", "set: ")
            raise ConfigError(f"{path}: its scenario does not validate: {text}") from None
    if isinstance(spec.scenario, dict):
        entry = mapping_get(root, "scenario")
        where = Locator(str(path), entry[1] if entry else None)
        try:
            data = apply_overrides(copy.deepcopy(spec.scenario), overrides)
        except ConfigError as err:
            raise ConfigError(f"{path}: {str(err).replace('--set ', 'set: ')}") from None
        return validate_scenario(data, where, path.parent), path.parent
    raise _report(path, root, [(("scenario",), "must be a path to a scenario YAML (relative to "
                                "this file) or an inline scenario mapping")])


def _check_baseline(path: Path, root: yaml.Node | None, spec: RegressionSpec,
                    config: ScenarioConfig) -> None:
    """Every baseline entry names a class of the scenario and a column of the summary, no class
    block is empty, and no band of a bounded metric is wide enough to accept anything."""
    problems: list[tuple[tuple, str]] = []
    if CLUSTER in config.classes:
        problems.append((("scenario", "classes", CLUSTER),
                         f"a request class may not be called {CLUSTER!r} here: the baseline uses "
                         "that name for cluster-wide metrics"))
    groups = [*config.classes, ALL, CLUSTER]
    for group, metrics in (spec.baseline or {}).items():
        if group not in groups:
            close = difflib.get_close_matches(group, groups, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            problems.append((("baseline", group), f"unknown request class{hint} (the scenario's "
                             f"classes, {ALL!r} for all of them, or {CLUSTER!r}: {', '.join(groups)})"))
            continue
        known = CLUSTER_COLUMNS if group == CLUSTER else CLASS_METRICS
        if not metrics:
            problems.append((("baseline", group), "no metrics: a class block must pin at least "
                             "one (or be deleted, and then pinned again with --update)"))
        for metric, band in metrics.items():
            if metric in BOUNDED_METRICS:
                low, high = BOUNDED_METRICS[metric]
                half = (high - low) / 2
                if band.abs_tol >= half:
                    problems.append((("baseline", group, metric, "abs_tol"),
                                     f"must be below {half:g} (got {band.abs_tol:g}): {metric} "
                                     f"lies in [{low:g}, {high:g}], and a band of ±{half:g} or "
                                     "more around some values accepts every possible result"))
            if metric not in known:
                close = difflib.get_close_matches(metric, known, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                where = "cluster-wide" if group == CLUSTER else "per-class"
                other = (" (a cluster-wide metric: put it under 'cluster')"
                         if metric in CLUSTER_COLUMNS else "")
                problems.append((("baseline", group, metric), f"unknown {where} metric{hint}{other} "
                                 f"(expected one of: {', '.join(known)})"))
    if problems:
        raise _report(path, root, problems)


def verify_pinned(regression: Regression) -> tuple[str, ...]:
    """Refuse a baseline that was weakened or never pinned; return how the scenario changed.

    Raises :class:`ConfigError` (a user error: nothing has been simulated yet) for a missing or
    empty baseline, a missing or hand-edited ``pinned:`` record, and a metric set that differs
    from the pinned one. A changed scenario is returned instead, since it is a regression
    failure to report beside the metrics rather than a malformed file.
    """
    path, root, spec = regression.path, regression.root, regression.spec
    update = regression.update_command
    if spec.baseline is None:
        raise ConfigError(f"{path}: has no 'baseline:' yet; create it with '{update}'")
    if not spec.baseline:
        raise _report(path, root, [(("baseline",), f"empty: it would check nothing and always "
                                    f"pass; pin the default metrics with '{update}'")])
    if spec.pinned is None:
        raise _report(path, root, [(("baseline",), f"not pinned: no '{check_pin.PIN_KEY}:' record "
                                    "of the scenario and metric set it was recorded from "
                                    "(written by hand, or by an older chironsim), so a changed "
                                    f"scenario would go unnoticed; record it with '{update}'")])
    pinned, problems = check_pin.parse(spec.pinned, update)
    if pinned is None:
        raise _report(path, root, problems)
    problems = check_pin.metric_set_problems(pinned, spec.baseline, update)
    if problems:
        raise _report(path, root, problems)
    now = check_pin.record(regression.config, regression.base_dir, pinned.metrics)
    paths = {key: file for key, file, *_ in workload_files(regression.config.workload,
                                                           regression.base_dir)}
    return check_pin.scenario_changes(pinned, now, paths)


def mapping_get(node: yaml.Node | None, key: str) -> tuple[yaml.Node, yaml.Node] | None:
    """The (key node, value node) of ``key`` in a YAML mapping node, or None."""
    if not isinstance(node, yaml.MappingNode):
        return None
    return next(((k, v) for k, v in node.value if getattr(k, "value", None) == key), None)
