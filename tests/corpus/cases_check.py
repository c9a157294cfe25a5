"""Regression-file mistakes for ``chironsim check``: weakened baselines and malformed files.

Every case starts from a file that ``chironsim check --update`` really pinned (built once, at
import, from the light scenario: a fraction of a second), then makes one edit a user could make
by hand. Each must be refused before anything is simulated, naming the file and line, and must
leave the file as it was: a weakened baseline is an error, not a quiet pass.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from corpus.case import Case, as_yaml, light_scenario

from chironsim.experiments.check import check

FILE = "regression.yaml"


def _pinned() -> str:
    """A regression file over an inline light scenario, as ``check --update`` writes it."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / FILE
        path.write_text(as_yaml({"description": "corpus", "scenario": light_scenario()}))
        status = check(path, update=True, echo=lambda _line: None)
        assert status == 0, status
        return path.read_text()


PINNED = _pinned()


def _edit(pattern: str, replacement: str, text: str = PINNED) -> str:
    """``text`` with the first match of ``pattern`` replaced (the pattern must match)."""
    edited, count = re.subn(pattern, replacement, text, count=1, flags=re.M)
    assert count == 1, f"{pattern!r} is not in the pinned file"
    return edited


def _line(text: str, fragment: str, after: str = "baseline:") -> str:
    """``FILE:LINE`` of the first line containing ``fragment`` below the line ``after``."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(after))
    number = next(i for i in range(start, len(lines)) if fragment in lines[i]) + 1
    return f"{FILE}:{number}"


def _case(name: str, text: str, expect: list[str], *extra: str) -> Case:
    return Case(name, {FILE: text}, ["check", FILE, *extra], expect)


def _band(metric: str, key: str, value: str) -> str:
    """The pinned file with one tolerance (or the value) of an interactive metric replaced."""
    return _edit(rf"^(    {metric}: +\{{.*?{key}: )[^,}}]+", rf"\g<1>{value}")


INF_TOL = _band("ttft_p99", "abs_tol", ".inf")
NAN_TOL = _band("ttft_p99", "rel_tol", ".nan")
NEGATIVE_TOL = _band("tpot_p50", "abs_tol", "-0.001")
WHOLE_VALUE_TOL = _band("e2e_p99", "rel_tol", "1.0")
ATTAINMENT_ANY = _band("slo_attainment", "abs_tol", "1.0")
INF_VALUE = _band("ttft_p50", "value", ".inf")
NO_METRIC = _edit(r"^    ttft_p99: .*\n", "")
NO_CLASS = _edit(r"^  cluster:\n    gpu_hours: .*\n", "")
EMPTY = _edit(r"^baseline:\n(  .*\n)+", "baseline: {}\n")
EMPTY_CLASS = _edit(r"^  interactive:\n(    .*\n)+", "  interactive: {}\n")
UNPINNED = PINNED[:PINNED.index("# Recorded by")]
NO_BASELINE = PINNED[:PINNED.index("# Pinned by")]
# The metric deleted from the baseline and from the record: only the seal notices.
RECORD_EDITED = _edit(r"ttft_p99, ", "", _edit(r"^    ttft_p99: .*\n", ""))
EXTRA_METRIC = _edit(r"^(  interactive:\n)",
                     r"\g<1>    ttft_p90: {value: 0.5, abs_tol: 0.0, rel_tol: 0.02}\n")
RECORD_NOT_A_MAPPING = _edit(r"^pinned:\n(  .*\n)+", "pinned: 3\n")
BAND_TYPO = _edit(r"^(    ttft_p50: +\{.*?)abs_tol:", r"\g<1>abs_tolerance:")
UNKNOWN_CLASS = _edit(r"^  interactive:", "  interactiv:")

CASES: list[Case] = [
    _case("check-tolerance-infinite", INF_TOL,
          [_line(INF_TOL, "ttft_p99"), "baseline.interactive.ttft_p99.abs_tol", "finite number"]),
    _case("check-tolerance-nan", NAN_TOL,
          [_line(NAN_TOL, "ttft_p99"), "baseline.interactive.ttft_p99.rel_tol", "finite number"]),
    _case("check-tolerance-negative", NEGATIVE_TOL,
          [_line(NEGATIVE_TOL, "tpot_p50"), "baseline.interactive.tpot_p50.abs_tol",
           "greater than or equal to 0"]),
    _case("check-rel-tol-whole-value", WHOLE_VALUE_TOL,
          [_line(WHOLE_VALUE_TOL, "e2e_p99"), "baseline.interactive.e2e_p99.rel_tol",
           "must be below 1"]),
    _case("check-attainment-band-covers-everything", ATTAINMENT_ANY,
          [_line(ATTAINMENT_ANY, "slo_attainment"), "baseline.interactive.slo_attainment.abs_tol",
           "must be below 0.5"]),
    _case("check-value-infinite", INF_VALUE,
          [_line(INF_VALUE, "ttft_p50"), "baseline.interactive.ttft_p50.value", "finite number"]),
    _case("check-metric-deleted", NO_METRIC,
          [_line(NO_METRIC, "interactive:"), "baseline.interactive.ttft_p99", "metric deleted",
           f"chironsim check {FILE} --update"]),
    _case("check-class-deleted", NO_CLASS,
          [_line(NO_CLASS, "baseline:"), "baseline.cluster", "class block deleted"]),
    _case("check-baseline-empty", EMPTY,
          [_line(EMPTY, "baseline:"), "baseline: empty", f"chironsim check {FILE} --update"]),
    _case("check-class-empty", EMPTY_CLASS,
          [_line(EMPTY_CLASS, "interactive:"), "baseline.interactive: no metrics"]),
    _case("check-never-pinned", UNPINNED,
          [_line(UNPINNED, "baseline:"), "baseline: not pinned",
           f"chironsim check {FILE} --update"]),
    _case("check-no-baseline-yet", NO_BASELINE,
          [f"{FILE}: has no 'baseline:' yet", f"chironsim check {FILE} --update"]),
    _case("check-record-edited-by-hand", RECORD_EDITED,
          [_line(RECORD_EDITED, "seal:", after="pinned:"), "pinned.seal: does not match"]),
    _case("check-metric-not-pinned", EXTRA_METRIC,
          [_line(EXTRA_METRIC, "ttft_p90"), "baseline.interactive.ttft_p90",
           "not in the metric set --update pinned"]),
    _case("check-record-not-a-mapping", RECORD_NOT_A_MAPPING,
          [_line(RECORD_NOT_A_MAPPING, "pinned:", after="pinned:"),
           "pinned: not what --update writes"]),
    _case("check-band-key-typo", BAND_TYPO,
          [_line(BAND_TYPO, "ttft_p50"), "baseline.interactive.ttft_p50.abs_tolerance",
           "did you mean 'abs_tol'?"]),
    _case("check-unknown-class", UNKNOWN_CLASS,
          [_line(UNKNOWN_CLASS, "interactiv:"), "baseline.interactiv",
           "did you mean 'interactive'?"]),
    # --update keeps the tolerances it finds, so it must refuse a bad one rather than re-pin it.
    _case("check-update-keeps-no-infinite-tolerance", INF_TOL,
          [_line(INF_TOL, "ttft_p99"), "baseline.interactive.ttft_p99.abs_tol", "finite number"],
          "--update"),
    Case("check-scenario-file-missing", {FILE: "scenario: nowhere.yaml\n"}, ["check", FILE],
         [f"{FILE}:1", "scenario", "nowhere.yaml not found"]),
    Case("check-folder-without-regressions", {"regressions/notes.txt": "not a regression\n"},
         ["check", "regressions"], ["regressions", "no regression files"]),
]
