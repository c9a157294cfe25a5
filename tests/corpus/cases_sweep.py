"""Sweep, compare and plot mistakes: specs, options, folders and damaged result tables.

Sweep cases write ``base.yaml`` (the light scenario) and a literal ``spec.yaml`` whose line
numbers can be read off the text below; each must fail while the spec is expanded, before any
run, and leave the folder exactly as it was (no ``out/``). Compare and plot cases read result
and sweep folders built once, at import, from empty tables (no simulation), with one file cut
short or garbled as a full disk or an interrupted copy would leave it.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pandas as pd
from corpus.case import Case, as_yaml, light_scenario

from chironsim.experiments.result import Result
from chironsim.metrics.slo import RequestClassSpec

BASE = as_yaml(light_scenario())
RATE = "workload.streams.0.arrival.rate"
SWEEP = ["sweep", "spec.yaml", "--quiet", "--workers", "1", "--out", "out"]


def sweep(name: str, spec: str, expect: list[str], *extra: str,
          files: dict[str, str | bytes] | None = None, timeout_s: float = 60.0) -> Case:
    """``chironsim sweep spec.yaml`` over ``base.yaml``; ``spec`` is the literal spec text."""
    return Case(name, {"base.yaml": BASE, "spec.yaml": spec, **(files or {})},
                [*SWEEP, *extra], expect, timeout_s=timeout_s)


def spec(*grid_lines: str, head: str = "name: s\nbase: base.yaml\n", tail: str = "") -> str:
    """A spec whose ``grid:`` is line 3 and whose first grid key is line 4."""
    return head + "grid:\n" + "".join(f"  {line}\n" for line in grid_lines) + tail


def _bomb(indent: str, first: str) -> str:
    """Nine nested lists of nine aliases to the previous one (9**9 leaves), one per line."""
    lines = [f"{first}&a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for prev, name in zip("abcdefgh", "bcdefghi"):
        lines.append(f"{indent}- &{name} [{', '.join(['*' + prev] * 9)}]")
    return "\n".join(lines) + "\n"


BOMB_SPEC = spec(f"{RATE}:") + _bomb("    ", "    - ")
BOMB_BASE = BASE.replace("output:\n  plots: false\n",
                         "output:\n  plots: false\n  junk:\n" + _bomb("  ", "  - "))
assert BOMB_BASE != BASE


def _run_folder() -> dict[str, bytes]:
    """The files of a real result folder of an empty run (every table, the manifest)."""
    empty = Result.from_records([], [], [], [], classes={"interactive": RequestClassSpec()},
                                duration_s=1.0, price_per_gpu_hour={}, manifest={"name": "x"})
    with tempfile.TemporaryDirectory() as folder:
        out = empty.save(Path(folder) / "run")
        return {p.name: p.read_bytes() for p in out.iterdir()}


RUN = _run_folder()


def run_with(**changes: bytes) -> dict[str, str | bytes]:
    """``run/`` holding the result folder with some files replaced (name with ``_`` for ``.``)."""
    files = dict(RUN)
    files.update({name.replace("_", "."): data for name, data in changes.items()})
    return {f"run/{name}": data for name, data in files.items()}


def _sweep_tables() -> dict[str, bytes]:
    runs = pd.DataFrame({"point_id": ["a"], "status": ["ok"], "policy": ["static"],
                         "request_class": ["all"], "slo_attainment": [1.0]})
    summary = pd.DataFrame({"policy": ["static"], "request_class": ["all"], "n": [1],
                            "slo_attainment_mean": [1.0], "slo_attainment_ci_low": [float("nan")],
                            "slo_attainment_ci_high": [float("nan")]})
    return {"runs.parquet": runs.to_parquet(index=False),
            "summary.parquet": summary.to_parquet(index=False)}


SWEEP_TABLES = _sweep_tables()
REQUESTS = RUN["requests.parquet"]
NO_SIZES = json.dumps({k: v for k, v in json.loads(RUN["manifest.json"]).items() if k != "files"})
OTHER_SCHEMA = pd.DataFrame({"request_id": [1], "colour": ["red"]}).to_parquet(index=False)

CASES: list[Case] = [
    # ------------------------------------------------------------------ the spec's schema
    sweep("sweep-unknown-grid-key", spec("cluster.pools.default.instancez: [1, 2]"),
          ["spec.yaml:4: grid.cluster.pools.default.instancez", "unknown key"]),
    sweep("sweep-unknown-spec-key", "name: t\nbase: base.yaml\ngird: {seed: [1]}\n",
          ["spec.yaml:3: gird: unknown key (expected one of: base, grid,"]),
    sweep("sweep-empty-grid-values", spec(f"{RATE}: []"),
          [f"spec.yaml:4: grid.{RATE}: has no values"]),
    sweep("sweep-grid-key-not-a-path", spec("'a..b': [1]"),
          ["spec.yaml:4: grid.a..b: is not a dotted key path"]),
    sweep("sweep-name-escapes-results", spec("seed: [1]", head="name: ../x\nbase: base.yaml\n"),
          ["spec.yaml:1", "name", "path separator"]),
    sweep("sweep-name-empty", spec("seed: [1]", head="name: ''\nbase: base.yaml\n"),
          ["spec.yaml:1", "name", "must not be empty"]),
    sweep("sweep-missing-name", "base: base.yaml\nreplications: 2\n",
          ["spec.yaml", "name: required key is missing"]),
    sweep("sweep-spec-not-a-mapping", "- name\n- base\n",
          ["spec.yaml: expected a mapping of sweep keys, got list"]),
    sweep("sweep-spec-invalid-yaml", "name: s\nbase: base.yaml\ngrid: {seed: [1, 2}\n",
          ["spec.yaml:3: not valid YAML"]),
    sweep("sweep-spec-key-twice", "name: s\nbase: base.yaml\nname: t\n",
          ["spec.yaml:3: key 'name' is given twice (first on line 1)"]),
    Case("sweep-spec-not-found", {"base.yaml": BASE}, SWEEP, ["spec.yaml: sweep spec not found"]),
    sweep("sweep-replications-zero", "name: s\nbase: base.yaml\nreplications: 0\n",
          ["spec.yaml:3: replications: must be greater than or equal to 1"]),
    sweep("sweep-replications-and-grid-seed", spec("seed: [1, 2]", tail="replications: 2\n"),
          ["spec.yaml:5: replications: give either replications or grid.seed"]),
    sweep("sweep-metric-not-numeric", "name: s\nbase: base.yaml\nmetrics: [slo]\n",
          ["spec.yaml:3: metrics[0]: 'slo' is not a numeric summary column"]),
    sweep("sweep-unknown-variant-name", spec("variant: [big, odd]",
                                             tail="variants:\n  big: {cluster.gpu: h100-sxm}\n"),
          ["spec.yaml:4: grid.variant[1]: unknown variant 'odd'"]),
    sweep("sweep-empty-variant", "name: s\nbase: base.yaml\nvariants:\n  nothing: {}\n",
          ["spec.yaml:4: variants.nothing: is empty"]),
    # ------------------------------------------------------------------ the base scenario
    sweep("sweep-base-not-found", "name: s\nbase: missing.yaml\n",
          ["spec.yaml:2: base: scenario file", "missing.yaml not found"]),
    sweep("sweep-base-not-a-mapping", "name: s\nbase: base.yaml\n",
          ["base.yaml: expected a mapping of config keys, got list"],
          files={"base.yaml": "- 1\n- 2\n"}),
    sweep("sweep-base-invalid-key", "name: s\nbase: base.yaml\n",
          ["base.yaml:", "cluster.gpuz: unknown key"],
          files={"base.yaml": BASE.replace("  gpu: h100-sxm", "  gpuz: h100-sxm")}),
    # ------------------------------------------------------------------ grid points
    sweep("sweep-invalid-grid-value", spec(f"{RATE}: [2.0, -1.0]"),
          [f"spec.yaml:4: grid.{RATE}[1] = -1.0: workload.streams[0].arrival.rate:"]),
    sweep("sweep-invalid-policy-value", spec("policy: [static, reactive]"),
          ["spec.yaml:4: grid.policy[1] = 'reactive': policy.target: required key is missing"]),
    sweep("sweep-invalid-variant", "name: s\nbase: base.yaml\nvariants:\n  odd: {cluster.gpu: h101}\n",
          ["spec.yaml:4: variants.odd: cluster.gpu: unknown GPU 'h101'"]),
    sweep("sweep-list-index-out-of-range", spec("workload.streams.3.arrival.rate: [1.0]"),
          ["spec.yaml:4: grid.workload.streams.3.arrival.rate", "index 3 is out of range"]),
    sweep("sweep-grid-trace-not-found", spec("workload.streams.0:\n"
                                             "  - {kind: trace, format: azure, path: nope.csv, "
                                             "request_class: interactive}"),
          ["spec.yaml:5: grid.workload.streams.0[0] = ", "workload.streams[0].path:",
           "nope.csv"]),
    # ------------------------------------------------------------------ repeated points
    sweep("sweep-repeated-grid-value", spec("seed: [1, 1]"),
          ["spec.yaml:4: grid.seed[1]: repeats entry 0 (1)", "use replications"]),
    sweep("sweep-repeated-policy", spec("policy: [{kind: static}, {kind: static}]"),
          ["spec.yaml:4: grid.policy[1]: repeats entry 0"]),
    sweep("sweep-values-resolving-to-one-scenario", spec(f"{RATE}: [2, 2.0]"),
          [f"spec.yaml:4: grid.{RATE}[1]: grid point ({RATE}=2.0) is the same scenario as "
           f"({RATE}=2)"]),
    sweep("sweep-variants-resolving-to-one-scenario",
          "name: s\nbase: base.yaml\nvariants:\n  a: {seed: 3}\n  b: {seed: 3}\n",
          ["spec.yaml:5: variants.b: grid point (variant=b) is the same scenario as (variant=a)"]),
    # ------------------------------------------------------------------ sizes
    sweep("sweep-alias-bomb-grid-value", BOMB_SPEC,
          [f"spec.yaml:4: grid.{RATE}: expands to more than 100,000 values"], timeout_s=20),
    sweep("sweep-alias-bomb-in-base", "name: s\nbase: base.yaml\n",
          ["base.yaml:", "output: expands to more than 100,000 values"],
          files={"base.yaml": BOMB_BASE}, timeout_s=20),
    sweep("sweep-too-many-points",
          spec(*(f"{key}: [{', '.join(str(v) for v in range(1, 12))}]"
                 for key in ("seed", RATE, "duration_s", "drain_s", "sample_interval_s"))),
          ["spec.yaml:3: grid: the sweep has 161,051 grid points", "at most 100,000"]),
    sweep("sweep-replications-too-many", "name: s\nbase: base.yaml\nreplications: 1000000000\n",
          ["spec.yaml:3: replications: must be less than or equal to 100000"]),
    # ------------------------------------------------------------------ options and folders
    sweep("sweep-address-without-ray", spec("seed: [1, 2]"), ["add --executor ray"],
          "--address", "127.0.0.1:6379"),
    sweep("sweep-workers-zero", spec("seed: [1, 2]"), ["--workers", "must be 1 or more"],
          "--workers", "0"),
    sweep("sweep-out-not-a-sweep-folder", spec("seed: [1, 2]"),
          ["out: folder exists and is not a chironsim sweep folder"],
          files={"out/notes.txt": "keep me\n"}),
    sweep("sweep-out-is-a-file", spec("seed: [1, 2]"),
          ["out: exists and is not a folder"], files={"out": "a file\n"}),
    # ------------------------------------------------------------------ compare and plot
    Case("compare-truncated-table", run_with(requests_parquet=REQUESTS[:-20]), ["compare", "run"],
         ["run/requests.parquet: has", "truncated", "run it again"]),
    Case("plot-truncated-table", run_with(requests_parquet=REQUESTS[:-20]), ["plot", "run"],
         ["run/requests.parquet: has", "truncated"]),
    Case("compare-truncated-table-of-an-older-folder",
         run_with(manifest_json=NO_SIZES.encode(), requests_parquet=REQUESTS[:-20]),
         ["compare", "run"], ["run/requests.parquet: cannot read the requests table",
                              "Parquet magic bytes not found"]),
    Case("compare-table-of-another-schema",
         run_with(manifest_json=NO_SIZES.encode(), requests_parquet=OTHER_SCHEMA),
         ["compare", "run"], ["run/requests.parquet: cannot read the requests table",
                              "does not match its schema"]),
    Case("compare-garbled-manifest", run_with(manifest_json=b'{"name": "x", "fi'),
         ["compare", "run"], ["run/manifest.json: cannot read the manifest"]),
    Case("plot-manifest-not-an-object", run_with(manifest_json=b"[1, 2]"), ["plot", "run"],
         ["run/manifest.json: the manifest is not a JSON object"]),
    Case("compare-truncated-sweep-table",
         {"sweep/runs.parquet": SWEEP_TABLES["runs.parquet"][:-8],
          "sweep/summary.parquet": SWEEP_TABLES["summary.parquet"]},
         ["compare", "sweep"], ["sweep/runs.parquet: cannot read the sweep table"]),
    Case("plot-truncated-sweep-summary",
         {"sweep/runs.parquet": SWEEP_TABLES["runs.parquet"],
          "sweep/summary.parquet": SWEEP_TABLES["summary.parquet"][:40]},
         ["plot", "sweep"], ["sweep/summary.parquet: cannot read the sweep table"]),
    Case("compare-sweep-table-lacks-columns",
         {"sweep/runs.parquet": SWEEP_TABLES["summary.parquet"],
          "sweep/summary.parquet": SWEEP_TABLES["summary.parquet"]},
         ["compare", "sweep"], ["sweep/runs.parquet: lacks the column(s) point_id"]),
    Case("compare-neither-folder", {"stuff/notes.txt": "hello\n"}, ["compare", "stuff"],
         ["stuff: neither a result folder"]),
    Case("compare-missing-folder", {}, ["compare", "nowhere"], ["nowhere: folder not found"]),
    Case("plot-sweep-unknown-axis",
         {"sweep/runs.parquet": SWEEP_TABLES["runs.parquet"],
          "sweep/summary.parquet": SWEEP_TABLES["summary.parquet"]},
         ["plot", "sweep", "--x", "nope"], ["--x nope: not an axis of this sweep"]),
]
