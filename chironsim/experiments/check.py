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
    pinned: {...}                      # written by --update: the scenario and the metric set

A metric passes when ``|now − value| ≤ max(abs_tol, rel_tol·|value|)`` (both NaN also passes).
The simulator is deterministic, so the bands are not there to absorb noise: they decide how
large an intended change to the model or a policy may be before someone has to look at it and
accept it with ``--update``, which rewrites the ``value`` entries and the ``pinned:`` record in
place (the rest of the file, comments and tolerances included, is left as it is).

The gate must not be weakened by an edit that looks harmless, so besides the values:

- ``pinned:`` (:mod:`chironsim.experiments.check_pin`) records the scenario's fingerprint and
  the metric set. A changed scenario (config or input file) is a regression failure naming what
  changed; a deleted metric or class, an edited record, a file never pinned and an empty
  baseline are errors. Each is accepted only by running ``--update`` deliberately.
- Tolerances are finite and non-negative, ``rel_tol`` is below 1 (a band of ±100 % of the value
  reaches zero, so it could not notice the metric collapsing), and a metric bounded to a range
  (``slo_attainment`` in [0, 1]) takes an ``abs_tol`` below half that range (a band that wide
  around some value covers every possible result). A ``value`` is finite, or ``.nan`` for a
  metric the run leaves undefined (a class with no finished request), which passes only while
  it stays undefined.

Every file is validated, its scenario loaded and its record checked before anything is
simulated: a bad or weakened file is a ConfigError naming the file, line and key (exit status
2); a regression, including a changed scenario, is exit status 1.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pandas as pd
import yaml

from chironsim.errors import ConfigError
from chironsim.experiments import check_pin
from chironsim.experiments.check_load import (
    Band,
    Regression,
    load_regression,
    mapping_get,
    regression_files,
    verify_pinned,
)
from chironsim.experiments.compare import CLUSTER
from chironsim.experiments.config import ScenarioConfig
from chironsim.experiments.yaml_source import read_yaml

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
    #: What differs from the scenario the baseline was recorded from (empty: the same one).
    scenario_changes: tuple[str, ...] = ()

    @property
    def failures(self) -> tuple[MetricCheck, ...]:
        return tuple(c for c in self.checks if not c.passed)

    @property
    def passed(self) -> bool:
        return not self.failures and not self.scenario_changes


@dataclass(frozen=True)
class Change:
    """One baseline value ``--update`` wrote (``old`` is None for a newly pinned metric)."""

    request_class: str
    metric: str
    old: float | None
    new: float


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
                        tolerance_scale: float = 1.0, wall_s: float = 0.0,
                        scenario_changes: tuple[str, ...] = ()) -> CheckResult:
    """Hold each baseline band against the new summary (``scenario_changes`` from
    :func:`verify_pinned` fail the result whatever the metrics say)."""
    if regression.spec.baseline is None:
        raise ConfigError(f"{regression.path}: has no 'baseline:' yet; create it with "
                          f"'chironsim check {regression.path} --update'")
    checks = []
    for group, metrics in regression.spec.baseline.items():
        for metric, band in metrics.items():
            now = metric_value(summary, group, metric)
            checks.append(MetricCheck(group, metric, band.value, now, band.width(tolerance_scale),
                                      band.holds(now, tolerance_scale)))
    return CheckResult(regression, tuple(checks), wall_s, scenario_changes)


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
    lines = ["# Pinned by `chironsim check --update`, which rewrites only the values and the",
             "# record below: tolerances and comments may be edited by hand.", "baseline:"]
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


def _node_end(node: yaml.Node) -> int:
    """Where a node's own text ends: a block collection's end mark lies past any comment that
    follows it, which a replacement must keep."""
    if isinstance(node, yaml.MappingNode) and not node.flow_style and node.value:
        return _node_end(node.value[-1][1])
    if isinstance(node, yaml.SequenceNode) and not node.flow_style and node.value:
        return _node_end(node.value[-1])
    return node.end_mark.index


def _append(text: str, block: str) -> str:
    return text + ("" if text.endswith("\n") or not text else "\n") + block + "\n"


def update_baseline(regression: Regression, summary: pd.DataFrame) -> list[Change]:
    """Rewrite the file's baseline values and its ``pinned:`` record; return what was written.

    Only the text of each ``value`` scalar is replaced, so comments, tolerances, key order and
    layout stay as they were. A file without a baseline (or with an empty one) gets one that
    pins :data:`DEFAULT_CLASS_METRICS` for each class and :data:`DEFAULT_CLUSTER_METRICS`. The
    record (appended after the baseline if there is none yet) pins the current scenario and the
    baseline's metric set, whatever the old record said: running --update is the deliberate act.
    The file is replaced only once the new text reads back and checks clean.
    """
    path = regression.path
    text = path.read_text(encoding="utf-8")
    _, root = read_yaml(path)
    entry = mapping_get(root, "baseline")
    edits: list[tuple[int, int, str]] = []  # (start, end, replacement) in the original text
    if not regression.spec.baseline:
        block, changes = _baseline_block(regression.config, summary)
        if entry is None:
            text = _append(text, block)
        else:
            key, value = entry
            edits.append((key.start_mark.index, _node_end(value), block))
    else:
        changes = []
        for group_key, group_node in entry[1].value:
            for metric_key, band_node in group_node.value:
                group, metric = group_key.value, metric_key.value
                value_node = mapping_get(band_node, "value")[1]
                new = metric_value(summary, group, metric)
                old = regression.spec.baseline[group][metric].value
                edits.append((value_node.start_mark.index, value_node.end_mark.index,
                              _yaml_float(new)))
                changes.append(Change(group, metric, old, new))
    metrics: dict[str, tuple[str, ...]] = {}
    for change in changes:
        metrics[change.request_class] = (*metrics.get(change.request_class, ()), change.metric)
    pin = check_pin.record(regression.config, regression.base_dir, metrics)
    pinned = mapping_get(root, check_pin.PIN_KEY)
    if pinned is None:
        text = _append(text, check_pin.render(pin, comment=True))
    else:
        key, value = pinned
        edits.append((key.start_mark.index, _node_end(value), check_pin.render(pin, comment=False)))
    for start, end, replacement in sorted(edits, reverse=True):
        text = text[:start] + replacement + text[end:]
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        # The rewritten file must read back and pass its own record (a bug otherwise).
        if verify_pinned(load_regression(tmp)):
            raise RuntimeError(f"{path}: --update wrote a record that does not match the scenario")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
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


def _repinned(regression: Regression) -> list[str]:
    """What ``--update`` is about to change in the record, for its report."""
    if regression.spec.pinned is None:
        return ["new record of the scenario and the metric set"]
    old, problems = check_pin.parse(regression.spec.pinned, regression.update_command)
    if old is None:
        return ["the old record was unreadable or edited; recorded again"]
    now = check_pin.record(regression.config, regression.base_dir, old.metrics)
    return [f"{change} (recorded again)" for change in check_pin.scenario_changes(old, now, {})]


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
    # Every record is checked (and every input file hashed) before the first simulation.
    changed = {} if update else {reg.path: verify_pinned(reg) for reg in regressions}
    width = max(len(r.name) for r in regressions)
    results = []
    for reg in regressions:
        started = time.perf_counter()
        summary = simulate(reg)
        wall = time.perf_counter() - started
        if update:
            repinned = _repinned(reg)
            changes = update_baseline(reg, summary)
            moved = [c for c in changes if c.old is None or not Band(value=c.old).holds(c.new)]
            echo(f"UPDATED  {reg.name:<{width}}  {len(moved)} of {len(changes)} values changed "
                 f"({wall:.1f} s)  {reg.path}")
            for change in moved:
                echo(_change_line(change))
            for line in repinned:
                echo(f"  pinned: {line}")
            continue
        result = compare_to_baseline(reg, summary, tolerance_scale, wall, changed[reg.path])
        results.append(result)
        n, bad = len(result.checks), len(result.failures)
        verdict = (f"{n} metrics within tolerance" if not bad
                   else f"{bad} of {n} metrics outside tolerance")
        if result.scenario_changes:
            verdict += "; the scenario changed since the baseline was recorded"
        echo(f"{'PASS' if result.passed else 'FAIL'}  {reg.name:<{width}}  {verdict} "
             f"({wall:.1f} s)  {reg.path}")
    if update:
        return 0
    failed = [r for r in results if not r.passed]
    if failed:
        echo("")
        if any(r.failures for r in failed):
            echo(format_failures(failed))
            echo("")
        for r in failed:
            if r.scenario_changes:
                echo(f"{r.regression.name}: the scenario (config or input files) changed since "
                     "the baseline was recorded, so its numbers no longer measure it:")
                echo("\n".join(f"  {change}" for change in r.scenario_changes))
                echo("  if that is intended, record it deliberately: "
                     f"{r.regression.update_command}")
                echo("")
        echo(f"{len(failed)} of {len(results)} scenarios regressed. If the change is intended, "
             f"accept it with: chironsim check {path} --update")
        return 1
    echo(f"all {len(results)} scenarios within tolerance")
    return 0
