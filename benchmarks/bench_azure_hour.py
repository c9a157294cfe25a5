"""Benchmark: replay the whole one-hour Azure LLM 2023 conversation trace on a static cluster.

This is the sweep workload DESIGN.md §9 is about: a production hour, run many times with
different settings, so what matters is how many simulated seconds one wall second buys.
Scenario: every request of the trace (class ``interactive``, SLO TTFT 2 s, TPOT 0.1 s) served
by N instances of Llama-3-8B on one H100-SXM each (TP 1), static policy, least-outstanding
router.

    python benchmarks/bench_azure_hour.py --instances 8 --json
    python benchmarks/bench_azure_hour.py --instances 64 --json --profile 25   # where time goes

The wall time covers :func:`chironsim.experiments.runner.run` as a whole (config validation,
reading the trace, which the workload streams during the simulation, simulating, and building
the result tables) but not interpreter start-up or imports, which a sweep pays once.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from chironsim.errors import ChironError
from chironsim.experiments.runner import run

#: The repository root is the folder above ``benchmarks/``; the traces sit beside the repository.
REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TRACE = REPO_ROOT.parent / "shared" / "traces" / "azure_llm_2023_conv.csv"


#: The policies the benchmark compares: the static baseline, and Llumnix with its 0.05 s polls
#: and live migrations (the scaler runs too, but the pool is pinned at ``instances`` so both
#: serve the hour with the same GPUs; DESIGN §9: polling must not make the run slow).
POLICIES: dict[str, dict[str, Any]] = {
    "static": {"kind": "static", "router": {"kind": "least_outstanding"}},
    "llumnix": {"kind": "llumnix"},
}


def scenario(trace: Path, instances: int, gpu: str, model: str, fast_forward: bool,
             policy: str = "static") -> dict[str, Any]:
    """The benchmark scenario as a config mapping, exactly what a YAML file would hold."""
    return {
        "name": f"bench-azure-hour-{instances}x",
        "seed": 0,
        "classes": {"interactive": {"priority": 0, "slo": {"ttft": 2.0, "tpot": 0.1}}},
        "workload": {"streams": [{
            "kind": "trace",
            "format": "azure",
            "path": str(trace),
            "request_class": "interactive",
        }]},
        "cluster": {
            "model": model,
            "gpu": gpu,
            "engine": {"fast_forward": fast_forward},
            "pools": {"default": {"instances": instances, "tp": 1, "min_instances": instances,
                                  "max_instances": instances}},
        },
        "policy": POLICIES[policy],
    }


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def measure(trace: Path, instances: int, gpu: str, model: str, fast_forward: bool,
            policy: str = "static") -> dict[str, Any]:
    """Run the scenario once and return the benchmark's numbers."""
    config = scenario(trace, instances, gpu, model, fast_forward, policy)
    started, cpu_started = time.perf_counter(), time.process_time()
    result = run(config)
    wall = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    sim_seconds = float(result.manifest["sim_end_s"])
    requests = int(result.manifest["requests"])
    overall = result.summary.set_index("request_class").loc["all"]
    return {
        "policy": policy,
        "migrations": int((result.events.kind == "migrate_done").sum()),
        "instances": instances,
        "gpu": gpu,
        "model": model,
        "fast_forward": fast_forward,
        "requests": requests,
        "sim_seconds": sim_seconds,
        "wall_seconds": wall,
        # CPU time of the same call: far less disturbed than wall time on a shared machine
        "cpu_seconds": cpu,
        "sim_per_wall": sim_seconds / wall,
        "requests_per_wall_second": requests / wall,
        "peak_rss_mb": peak_rss_mb(),
        "slo_attainment": float(overall["slo_attainment"]),
        "p99_ttft_s": float(overall["ttft_p99"]),
        "gpu_hours": float(overall["gpu_hours"]),
    }


def profiled(call: Callable[[], dict[str, Any]], top: int) -> dict[str, Any]:
    """``call()`` under cProfile; its ``top`` functions by own time go to stderr, so that
    ``--json`` output stays one object (docs/performance.md shows how to read them)."""
    profile = cProfile.Profile()
    numbers = profile.runcall(call)
    stats = pstats.Stats(profile, stream=sys.stderr)
    stats.sort_stats("tottime").print_stats(top)
    return numbers


def format_table(numbers: dict[str, Any]) -> str:
    """A short two-column table for people."""
    rows = [
        ("scenario", f"{numbers['instances']} x {numbers['model']} on {numbers['gpu']}, "
                     f"{numbers['policy']}, fast_forward={numbers['fast_forward']}"),
        ("migrations", f"{numbers['migrations']:,}"),
        ("requests", f"{numbers['requests']:,}"),
        ("simulated", f"{numbers['sim_seconds']:,.0f} s"),
        ("wall", f"{numbers['wall_seconds']:.2f} s"),
        ("CPU", f"{numbers['cpu_seconds']:.2f} s"),
        ("speed", f"{numbers['sim_per_wall']:,.0f}x real time"),
        ("requests / wall s", f"{numbers['requests_per_wall_second']:,.0f}"),
        ("peak RSS", f"{numbers['peak_rss_mb']:,.0f} MiB"),
        ("SLO attainment", f"{numbers['slo_attainment']:.4f}"),
        ("p99 TTFT", f"{numbers['p99_ttft_s']:.3f} s"),
        ("GPU hours", f"{numbers['gpu_hours']:.2f}"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=8, help="instances (one GPU each)")
    parser.add_argument("--trace", type=Path, default=DEFAULT_TRACE,
                        help="the Azure 2023 conversation trace (default: ../shared/traces/"
                             "azure_llm_2023_conv.csv beside the repository)")
    parser.add_argument("--gpu", default="h100-sxm", help="GPU name from the catalog")
    parser.add_argument("--model", default="llama-3-8b", help="model name from the catalog")
    parser.add_argument("--fast-forward", action=argparse.BooleanOptionalAction, default=True,
                        help="advance runs of identical decode iterations in one step")
    parser.add_argument("--policy", choices=sorted(POLICIES), default="static",
                        help="static (least-outstanding router) or llumnix (0.05 s polls, "
                             "live migration)")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument("--profile", type=int, metavar="N", default=0,
                        help="run under cProfile and print its top N functions by own time on "
                             "stderr (the wall time then includes the profiler's overhead)")
    args = parser.parse_args(argv)

    if args.instances < 1:
        parser.error("--instances must be at least 1")
    if not args.trace.is_file():
        print(f"bench_azure_hour: trace file not found: {args.trace}\n"
              "  it is the Azure LLM 2023 conversation trace (AzureLLMInferenceTrace_conv.csv); "
              "pass its location with --trace PATH", file=sys.stderr)
        return 2
    try:
        call = (lambda: measure(args.trace.resolve(), args.instances, args.gpu, args.model,
                                args.fast_forward, args.policy))
        numbers = profiled(call, args.profile) if args.profile > 0 else call()
    except ChironError as err:
        print(f"bench_azure_hour: {err}", file=sys.stderr)
        return 2
    print(json.dumps(numbers) if args.json else format_table(numbers))
    return 0


if __name__ == "__main__":
    sys.exit(main())
