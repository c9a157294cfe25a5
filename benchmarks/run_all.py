"""Benchmark suite: every speed and scale case of issue 12 in one command.

One number decides how much research fits in a day (DESIGN.md §9): simulated seconds per wall
second. It depends on the cluster size, the load, the policy and the run's length, so one
scenario is not enough; this script runs the fixed set below, each in a fresh interpreter so
that its peak memory is its own (``ru_maxrss`` of a child that did nothing else), and prints
or writes one summary.

    python benchmarks/run_all.py --json                  # every case at full size
    python benchmarks/run_all.py --quick --out results/  # short sizes; summary.json + .md there
    python benchmarks/run_all.py --cases day,week --quick
    python benchmarks/run_all.py --cases week --hours 6  # the week's first 6 simulated hours

Cases (``--quick`` or ``--hours`` shorten only the day and the week; the others are short):

- ``azure-conv-{1,4,8}``: the Azure LLM 2023 conversation hour (19,366 requests) on 1, 4 and 8
  Llama-3-8B / H100 instances, static, least-outstanding router (``bench_azure_hour.py``).
- ``azure-code-8``: the Azure LLM 2023 code hour (bursty arrivals, long prompts) on 8.
- ``chiron-batch``: the Chiron regression scenario (an interactive burst meets a 1,500-request
  batch job; Chiron's hierarchical autoscaler, evictions, cold starts).
- ``day``: a synthetic day, 1M requests (diurnal Poisson, mean 11.57/s, the quickstart's
  Azure-fitted lengths) on up to 64 instances under the reactive autoscaler. Quick: its first
  hour.
- ``week``: 27.3M requests over 7 days, the Azure 2024 conversation week's mean rate (45.1/s),
  diurnal, same pool and autoscaler. Quick: its first hour.

Each case reports ``requests``, ``sim_seconds``, ``wall_seconds`` (of ``run()``: validation,
streaming the workload, simulating, writing the results folder as the run goes, in a scratch
folder removed afterwards), ``sim_per_wall``,
``requests_per_wall_second``, ``events`` (rows of the events table), ``iterations`` (engine
iterations, all instances), ``peak_ready_instances`` (serving at once, at the samples),
``instances_started`` and ``peak_rss_mb``. Nothing is extrapolated: a
shortened case says so in ``size``.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
TRACES = REPO_ROOT.parent / "shared" / "traces"

#: The quickstart's lengths, fitted to the Azure 2023 conversation trace.
LENGTHS: dict[str, Any] = {
    "prompt_tokens": {"kind": "lognormal", "median": 760.0, "sigma": 0.98515},
    "output_tokens": {"kind": "lognormal", "median": 151.26, "sigma": 0.85901},
    "max_prompt_tokens": 8192,
    "max_output_tokens": 1000,
}

DAY_S = 86_400.0
#: Simulated length of the shortened day and week (``--quick``).
QUICK_S = 3_600.0


def _azure_hour(trace: str, instances: int) -> dict[str, Any]:
    """The Azure hour benchmark's scenario (bench_azure_hour.scenario) on another trace."""
    return {
        "name": f"azure-{trace}-{instances}x", "seed": 0,
        "classes": {"interactive": {"priority": 0, "slo": {"ttft": 2.0, "tpot": 0.1}}},
        "workload": {"streams": [{"kind": "trace", "format": "azure",
                                  "path": str(TRACES / f"azure_llm_2023_{trace}.csv"),
                                  "request_class": "interactive"}]},
        "cluster": {"model": "llama-3-8b", "gpu": "h100-sxm",
                    "pools": {"default": {"instances": instances, "tp": 1,
                                          "min_instances": instances,
                                          "max_instances": instances}}},
        "policy": {"kind": "static", "router": {"kind": "least_outstanding"}},
    }


def _synthetic(name: str, requests: int, days: float, quick: bool | float) -> dict[str, Any]:
    """A diurnal synthetic run of ``requests`` over ``days`` on a reactive pool of up to 64.

    The sine's mean is the run's mean rate and its trough half of it, so the autoscaler moves
    through the day. The pool starts with 4 instances (what the mean rate needs, with room).
    The engine has 64 seats (``max_num_seqs``), a latency-tuned deployment as in the Chiron
    experiment's baselines: the autoscaler's metric is seats in use ÷ seats, and with vLLM's
    default 256 a pool serving this load at good latency sits near 0.1 of its seats, so the HPA
    rule shrinks it to one instance, which then overloads and grows again (the week started
    8,590 instances that way, 7 → 1 within five minutes of the start).
    ``quick`` is True for the first hour, or a number of simulated seconds to stop at.
    """
    duration = days * DAY_S
    if quick:
        duration = min(QUICK_S if quick is True else float(quick), duration)
    rate = requests / (days * DAY_S)
    stream: dict[str, Any] = {
        "kind": "synthetic", "request_class": "interactive",
        "arrival": {"kind": "diurnal", "mean_rate": rate, "amplitude": 0.5,
                    "period_s": DAY_S, "phase": 0.0},
        "duration_s": duration, **LENGTHS,
    }
    if not quick:
        stream["num_requests"] = requests
    return {
        "name": name, "seed": 0, "duration_s": duration, "sample_interval_s": 10,
        "classes": {"interactive": {"priority": 0, "slo": {"ttft": 2.0, "tpot": 0.1}}},
        "workload": {"streams": [stream]},
        "cluster": {"model": "llama-3-8b", "gpu": "h100-sxm", "engine": {"max_num_seqs": 64},
                    "pools": {"default": {"instances": 4}}},
        "policy": {"kind": "reactive", "metric": "utilization", "target": 0.6,
                   "interval_s": 15, "scale_down_stabilization_s": 60, "cooldown_s": 30,
                   "min_instances": 1, "max_instances": 64,
                   "router": {"kind": "least_outstanding"}},
    }


def _chiron() -> dict[str, Any]:
    """The Chiron regression scenario, as pinned in configs/regression/."""
    path = REPO_ROOT / "configs" / "regression" / "chiron_burst_batch.yaml"
    return yaml.safe_load(path.read_text())["scenario"]


#: name -> (what it is, builder(quick) -> config). Order is the order of the summary.
CASES: dict[str, tuple[str, Any]] = {
    "azure-conv-1": ("Azure conversation hour, 1 x H100, static", lambda q: _azure_hour("conv", 1)),
    "azure-conv-4": ("Azure conversation hour, 4 x H100, static", lambda q: _azure_hour("conv", 4)),
    "azure-conv-8": ("Azure conversation hour, 8 x H100, static", lambda q: _azure_hour("conv", 8)),
    "azure-code-8": ("Azure code hour (bursty), 8 x H100, static", lambda q: _azure_hour("code", 8)),
    "chiron-batch": ("Chiron: interactive burst + 1,500-request batch job", lambda q: _chiron()),
    "day": ("synthetic day, 1M requests, reactive, <= 64 x H100",
            lambda q: _synthetic("day-1m", 1_000_000, 1.0, q)),
    "week": ("synthetic week, 27.3M requests (Azure 2024 conv mean rate), reactive, <= 64 x H100",
             lambda q: _synthetic("week-27m", 27_300_000, 7.0, q)),
}
SHORTENED = {"day", "week"}


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def measure(name: str, quick: bool | float) -> dict[str, Any]:
    """Run one case in this process and return its numbers (the child's side)."""
    from chironsim.experiments.runner import run

    what, build = CASES[name]
    # the run writes its results folder as it goes (bounded memory), as `chironsim run` does;
    # the folder is removed afterwards
    scratch = Path(tempfile.mkdtemp(prefix=f"run_all-{name}-"))
    try:
        started = time.perf_counter()
        result = run(build(quick), base_dir=REPO_ROOT, out=scratch / "result")
        wall = time.perf_counter() - started
        return _figures(name, what, quick, result, wall)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _figures(name: str, what: str, quick: bool | float, result: Any, wall: float) -> dict[str, Any]:
    sim_seconds = float(result.manifest["sim_end_s"])
    requests = int(result.manifest["requests"])
    inst = result.instances
    ts = result.timeseries
    # instances serving at once (summed over pools at each sample) and ever started
    peak_ready = int(ts.groupby("time")["ready"].sum().max()) if len(ts) else 0
    return {
        "case": name, "what": what,
        "size": (("first hour" if quick is True else f"first {quick / 3600:g} h")
                 if quick and name in SHORTENED else "full"),
        "requests": requests, "sim_seconds": sim_seconds, "wall_seconds": wall,
        "sim_per_wall": sim_seconds / wall, "requests_per_wall_second": requests / wall,
        "events": int(len(result.events)),
        "iterations": int(inst["iterations"].sum()) if "iterations" in inst else None,
        "peak_ready_instances": peak_ready, "instances_started": int(len(inst)),
        "peak_rss_mb": peak_rss_mb(),
    }


def run_case(name: str, quick: bool | float, timeout_s: float | None) -> dict[str, Any]:
    """Run one case in a fresh interpreter, so that its peak RSS is its own."""
    command = [sys.executable, str(Path(__file__).resolve()), "--child", name]
    if quick is True:
        command.append("--quick")
    elif quick:
        command += ["--hours", str(quick / 3600)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s,
                              check=False)
    except subprocess.TimeoutExpired:
        return {"case": name, "what": CASES[name][0], "error": f"timed out after {timeout_s} s"}
    if done.returncode != 0:
        return {"case": name, "what": CASES[name][0],
                "error": done.stderr.strip().splitlines()[-1] if done.stderr.strip()
                else f"exit status {done.returncode}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def markdown(rows: list[dict[str, Any]]) -> str:
    """The summary as a markdown table (docs/performance.md quotes it)."""
    lines = ["| case | size | requests | sim s | wall s | × real time | requests / wall s "
             "| events | iterations | peak ready instances | peak RSS MiB |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['case']} | {r['error']} |" + " |" * 9)
            continue
        lines.append(
            f"| {r['case']} | {r['size']} | {r['requests']:,} | {r['sim_seconds']:,.0f} "
            f"| {r['wall_seconds']:.2f} | {r['sim_per_wall']:,.0f} "
            f"| {r['requests_per_wall_second']:,.0f} | {r['events']:,} | {r['iterations']:,} "
            f"| {r['peak_ready_instances']} | {r['peak_rss_mb']:,.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="run the day and the week for their first simulated hour only")
    parser.add_argument("--hours", type=float, default=None,
                        help="run the day and the week for this many simulated hours only")
    parser.add_argument("--cases", default=",".join(CASES),
                        help=f"comma-separated subset of: {', '.join(CASES)}")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument("--out", type=Path, help="also write summary.json and summary.md here")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds allowed to each case (default: none)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.hours is not None and args.hours <= 0:
        parser.error("--hours must be positive")
    size: bool | float = args.hours * 3600 if args.hours else args.quick

    if args.child:
        print(json.dumps(measure(args.child, size)))
        return 0
    names = [n.strip() for n in args.cases.split(",") if n.strip()]
    unknown = [n for n in names if n not in CASES]
    if unknown:
        parser.error(f"unknown case(s) {', '.join(unknown)}; known: {', '.join(CASES)}")
    missing = [p for p in (TRACES / "azure_llm_2023_conv.csv", TRACES / "azure_llm_2023_code.csv")
               if not p.is_file() and any(n.startswith("azure") for n in names)]
    if missing:
        print(f"run_all: trace file(s) not found: {', '.join(map(str, missing))}", file=sys.stderr)
        return 2
    rows = []
    for name in names:
        row = run_case(name, size, args.timeout)
        rows.append(row)
        if not args.json:
            print(f"{name}: " + (row["error"] if "error" in row else
                  f"{row['wall_seconds']:.2f} s, {row['sim_per_wall']:,.0f}x real time, "
                  f"{row['peak_rss_mb']:,.0f} MiB"), file=sys.stderr, flush=True)
    summary = {"python": sys.version.split()[0], "quick": args.quick, "hours": args.hours,
               "cases": rows}
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        (args.out / "summary.md").write_text(markdown(rows) + "\n")
    print(json.dumps(summary) if args.json else markdown(rows))
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
