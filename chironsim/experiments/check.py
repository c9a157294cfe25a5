"""``chironsim check``: pinned scenarios whose summary must stay inside tolerance bands.

A regression file names a scenario and the numbers it produced when they were last accepted::

    description: quickstart at half length, static policy    # optional
    scenario: ../quickstart.yaml       # a scenario YAML relative to this file, or inline keys
    set:                               # optional overrides, as `chironsim run --set`
      duration_s: 300
    baseline:                          # request class (or `cluster`) → metric → band
      interactive:
        slo_attainment: {value: 0.993, abs_tol: 0.01, rel_tol: 0.02}
        ttft_p99: {value: 0.181, abs_tol: 0.0001, rel_tol: 0.02}
      cluster:
        gpu_hours: {value: 0.169, abs_tol: 0.0, rel_tol: 0.02}

A metric passes when ``|now − value| ≤ max(abs_tol, rel_tol·|value|)`` (both NaN also passes).
The simulator is deterministic, so the bands are not there to absorb noise: they decide how
large an intended change to the model or a policy may be before someone has to look at it and
accept it with ``--update``, which rewrites the ``value`` entries in place (the rest of the
file, comments included, is left as it is).

Every file is validated, and its scenario loaded, before anything is simulated: a bad file is
a ConfigError naming the file, line and key (exit status 2); a regression is exit status 1.
"""

from __future__ import annotations

import copy
import difflib
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from pydantic import Field, ValidationError

from chironsim.config_base import StrictModel
from chironsim.errors import ConfigError
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

#: Per-class metrics ``--update`` pins in a file that has no baseline yet.
DEFAULT_CLASS_METRICS = ("slo_attainment", "ttft_p50", "ttft_p99", "tpot_p50", "tpot_p99", "e2e_p99")
#: Cluster-wide metrics pinned by default.
DEFAULT_CLUSTER_METRICS = ("gpu_hours",)
#: (abs_tol, rel_tol) for a newly pinned metric. Our choice, not a measurement: 2 % relative
#: flags any change to the latency model or a policy that moves a headline number noticeably;
#: the absolute floors only matter near zero — one percentage point of attainment, 0.1 ms of
#: latency (well below one decode iteration), none for GPU-hours (never near zero).
DEFAULT_TOLERANCES: dict[str, tuple[float, float]] = {
    "slo_attainment": (0.01, 0.02),
    "latency": (1e-4, 0.02),
    "gpu_hours": (0.0, 0.02),
}

CLASS_METRICS = tuple(name for name, kind in SUMMARY_SCHEMA
                      if name != "request_class" and name not in CLUSTER_COLUMNS)
_TOP_KEYS = ("description", "scenario", "set", "baseline")
_BAND_KEYS = ("value", "abs_tol", "rel_tol")


class Band(StrictModel):
    """One pinned number and how far it may move."""

    value: float
    abs_tol: float = Field(0.0, ge=0, allow_inf_nan=False)
    rel_tol: float = Field(0.0, ge=0, allow_inf_nan=False)

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


@dataclass(frozen=True)
class Regression:
    """A validated regression file with its scenario, ready to simulate."""

    path: Path
    spec: RegressionSpec
    config: ScenarioConfig
    base_dir: Path

    @property
    def name(self) -> str:
        return self.path.stem


@dataclass(frozen=True)
class MetricCheck:
    request_class: str
    metric: str
    baseline: float
    now: float
    tolerance: float
    passed: bool

    @property
    def delta(self) -> float:
        return self.now - self.baseline


@dataclass(frozen=True)
class CheckResult:
    regression: Regression
    checks: tuple[MetricCheck, ...]
    wall_s: float

    @property
    def failures(self) -> tuple[MetricCheck, ...]:
        return tuple(c for c in self.checks if not c.passed)

    @property
    def passed(self) -> bool:
        return not self.failures


@dataclass(frozen=True)
class Change:
    """One baseline value ``--update`` wrote (``old`` is None for a newly pinned metric)."""

    request_class: str
    metric: str
    old: float | None
    new: float


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
    _check_baseline_names(path, root, spec, config)
    return Regression(path, spec, config, base_dir)


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
    msg = error["msg"].removeprefix("Value error, ")
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
        entry = _mapping_get(root, "scenario")
        where = Locator(str(path), entry[1] if entry else None)
        try:
            data = apply_overrides(copy.deepcopy(spec.scenario), overrides)
        except ConfigError as err:
            raise ConfigError(f"{path}: {str(err).replace('--set ', 'set: ')}") from None
        return validate_scenario(data, where, path.parent), path.parent
    raise _report(path, root, [(("scenario",), "must be a path to a scenario YAML (relative to "
                                "this file) or an inline scenario mapping")])


def _check_baseline_names(path: Path, root: yaml.Node | None, spec: RegressionSpec,
                          config: ScenarioConfig) -> None:
    """Every baseline entry must name a class of the scenario and a column of the summary."""
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
        for metric in metrics:
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


# ----------------------------------------------------------------------------- checking


def simulate(regression: Regression) -> pd.DataFrame:
    """Run the regression's scenario and return its summary table."""
    from chironsim.experiments.runner import run

    return run(regression.config, regression.base_dir).summary


def metric_value(summary: pd.DataFrame, group: str, metric: str) -> float:
    """One number of a summary: a class's column, or a cluster column (same on every row)."""
    if group == CLUSTER:
        return float(summary.iloc[0][metric]) if len(summary) else math.nan
    rows = summary[summary["request_class"].astype(str) == group]
    return float(rows.iloc[0][metric]) if len(rows) else math.nan


def compare_to_baseline(regression: Regression, summary: pd.DataFrame,
                        tolerance_scale: float = 1.0, wall_s: float = 0.0) -> CheckResult:
    """Hold each baseline band against the new summary."""
    if regression.spec.baseline is None:
        raise ConfigError(f"{regression.path}: has no 'baseline:' yet; create it with "
                          f"'chironsim check {regression.path} --update'")
    checks = []
    for group, metrics in regression.spec.baseline.items():
        for metric, band in metrics.items():
            now = metric_value(summary, group, metric)
            checks.append(MetricCheck(group, metric, band.value, now, band.width(tolerance_scale),
                                      band.holds(now, tolerance_scale)))
    return CheckResult(regression, tuple(checks), wall_s)


# ----------------------------------------------------------------------------- --update


def _yaml_float(x: float) -> str:
    """A float as YAML 1.1 reads it back exactly (PyYAML wants a dot before an exponent)."""
    if math.isnan(x):
        return ".nan"
    if math.isinf(x):
        return ".inf" if x > 0 else "-.inf"
    text = repr(float(x))
    if "e" in text and "." not in text:
        text = text.replace("e", ".0e")
    return text


def _default_tolerance(metric: str) -> tuple[float, float]:
    if metric in DEFAULT_TOLERANCES:
        return DEFAULT_TOLERANCES[metric]
    if metric.startswith(("ttft_", "tpot_", "e2e_")):
        return DEFAULT_TOLERANCES["latency"]
    return DEFAULT_TOLERANCES["gpu_hours"]


def _baseline_block(config: ScenarioConfig, summary: pd.DataFrame) -> tuple[str, list[Change]]:
    """A fresh ``baseline:`` block pinning the default metrics of every declared class."""
    lines = ["# Pinned by `chironsim check --update`, which rewrites only the values: tolerances",
             "# and comments may be edited by hand.", "baseline:"]
    changes = []
    groups = [(c, DEFAULT_CLASS_METRICS) for c in config.classes]
    groups.append((CLUSTER, DEFAULT_CLUSTER_METRICS))
    for group, metrics in groups:
        lines.append(f"  {group}:")
        width = max(len(m) for m in metrics)
        for metric in metrics:
            value = metric_value(summary, group, metric)
            abs_tol, rel_tol = _default_tolerance(metric)
            lines.append(f"    {metric + ':':<{width + 1}} {{value: {_yaml_float(value)}, "
                         f"abs_tol: {_yaml_float(abs_tol)}, rel_tol: {_yaml_float(rel_tol)}}}")
            changes.append(Change(group, metric, None, value))
    return "\n".join(lines), changes


def _mapping_get(node: yaml.Node | None, key: str) -> tuple[yaml.Node, yaml.Node] | None:
    if not isinstance(node, yaml.MappingNode):
        return None
    return next(((k, v) for k, v in node.value if getattr(k, "value", None) == key), None)


def update_baseline(regression: Regression, summary: pd.DataFrame) -> list[Change]:
    """Rewrite the file's baseline values with ``summary``'s; return what was written.

    Only the text of each ``value`` scalar is replaced, so comments, tolerances, key order and
    layout stay as they were. A file without a baseline (or with an empty one) gets one that
    pins :data:`DEFAULT_CLASS_METRICS` for each class and :data:`DEFAULT_CLUSTER_METRICS`.
    """
    path = regression.path
    text = path.read_text(encoding="utf-8")
    _, root = read_yaml(path)
    entry = _mapping_get(root, "baseline")
    if not regression.spec.baseline:
        block, changes = _baseline_block(regression.config, summary)
        if entry is None:
            text = text + ("" if text.endswith("\n") or not text else "\n") + block + "\n"
        else:
            key, value = entry
            text = text[:key.start_mark.index] + block + text[value.end_mark.index:]
    else:
        edits, changes = [], []
        for group_key, group_node in entry[1].value:
            for metric_key, band_node in group_node.value:
                group, metric = group_key.value, metric_key.value
                value_node = _mapping_get(band_node, "value")[1]
                new = metric_value(summary, group, metric)
                old = regression.spec.baseline[group][metric].value
                edits.append((value_node.start_mark.index, value_node.end_mark.index, new))
                changes.append(Change(group, metric, old, new))
        for start, end, new in sorted(edits, reverse=True):
            text = text[:start] + _yaml_float(new) + text[end:]
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    load_regression(path)  # the rewritten file must read back (it would be a bug otherwise)
    return changes


# ----------------------------------------------------------------------------- the command


def _num(x: float) -> str:
    return "nan" if math.isnan(x) else f"{x:.4g}"


def _delta(check: MetricCheck) -> str:
    if math.isnan(check.now) or math.isnan(check.baseline):
        return "-"
    text = f"{check.delta:+.3g}"
    if check.baseline != 0:
        text += f" ({check.delta / abs(check.baseline) * 100:+.1f}%)"
    return text


def format_failures(results: Sequence[CheckResult]) -> str:
    """The regressions as a table: scenario, class, metric, baseline, now, tolerance, Δ."""
    header = ["scenario", "class", "metric", "baseline", "now", "tolerance", "Δ"]
    rows = [[r.regression.name, c.request_class, c.metric, _num(c.baseline), _num(c.now),
             f"±{_num(c.tolerance)}", _delta(c)]
            for r in results for c in r.failures]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i < 3 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return "\n".join([line(header), "  ".join("-" * w for w in widths), *map(line, rows)])


def _change_line(change: Change) -> str:
    where = f"{change.request_class}.{change.metric}"
    if change.old is None:
        return f"  {where}: {_num(change.new)} (new)"
    rel = ""
    if change.old and not (math.isnan(change.old) or math.isnan(change.new)):
        rel = f" ({(change.new - change.old) / abs(change.old) * 100:+.1f}%)"
    return f"  {where}: {_num(change.old)} → {_num(change.new)}{rel}"


def check(
    path: str | os.PathLike[str],
    update: bool = False,
    tolerance_scale: float = 1.0,
    echo: Callable[[str], None] = print,
) -> int:
    """Run every regression under ``path``; return the exit status (0 pass, 1 regression).

    Each scenario prints one PASS/FAIL line as it finishes, then a table of every metric out of
    its band. With ``update`` the baselines are rewritten instead and the changes printed.
    Invalid files raise :class:`ConfigError` before anything runs.
    """
    if not (tolerance_scale > 0 and math.isfinite(tolerance_scale)):
        raise ConfigError(f"--tolerance-scale must be a positive number, got {tolerance_scale}")
    regressions = [load_regression(f) for f in regression_files(path)]
    if not update:
        for reg in regressions:
            if reg.spec.baseline is None:
                raise ConfigError(f"{reg.path}: has no 'baseline:' yet; create it with "
                                  f"'chironsim check {reg.path} --update'")
    width = max(len(r.name) for r in regressions)
    results = []
    for reg in regressions:
        started = time.perf_counter()
        summary = simulate(reg)
        wall = time.perf_counter() - started
        if update:
            changes = update_baseline(reg, summary)
            moved = [c for c in changes if c.old is None or not Band(value=c.old).holds(c.new)]
            echo(f"UPDATED  {reg.name:<{width}}  {len(moved)} of {len(changes)} values changed "
                 f"({wall:.1f} s)  {reg.path}")
            for change in moved:
                echo(_change_line(change))
            continue
        result = compare_to_baseline(reg, summary, tolerance_scale, wall)
        results.append(result)
        n, bad = len(result.checks), len(result.failures)
        verdict = (f"{n} metrics within tolerance" if not bad
                   else f"{bad} of {n} metrics outside tolerance")
        echo(f"{'PASS' if result.passed else 'FAIL'}  {reg.name:<{width}}  {verdict} "
             f"({wall:.1f} s)  {reg.path}")
    if update:
        return 0
    failed = [r for r in results if not r.passed]
    if failed:
        echo("")
        echo(format_failures(failed))
        echo("")
        echo(f"{len(failed)} of {len(results)} scenarios regressed. If the change is intended, "
             f"accept it with: chironsim check {path} --update")
        return 1
    echo(f"all {len(results)} scenarios within tolerance")
    return 0
