"""Benchmark: wall cost of one simulated engine iteration as the batch grows.

DESIGN.md §9 asks that an iteration cost the simulator the same whether 8 or 512 requests are
running (aggregates instead of per-request loops). This drives one instance with a batch job of
B requests submitted at t = 0, all with the same short prompt and the same long output, so
after one prefill iteration the instance runs B decodes for ``output - 1`` iterations and all
requests finish together. For each B it reports wall microseconds per iteration with stepping
every iteration (``fast_forward: false``) and with fast-forward on.

    python benchmarks/bench_iteration_cost.py --json

Numbers per B, all from the simulation loop's own wall time (the manifest's ``wall_seconds``:
no config validation, workload building or result tables):

- ``us_per_iteration``: loop wall time of the long-output run ÷ its iterations. It includes
  per-request work (arrival, admission, completion, the record), which is proportional to B and
  spread over a fixed number of iterations.
- ``marginal_us_per_iteration`` (stepping only): (wall_long − wall_short) ÷ (iterations_long −
  iterations_short), from a second run with a shorter output. The per-request work is the same
  in both runs and cancels, leaving the cost of one more decode iteration of a batch of B; this
  is the number that must not grow with B (``marginal_vs_smallest_batch``). With fast-forward a
  whole decode run is one planned stretch, so one more iteration costs next to nothing and the
  difference would be noise: fast-forward rows report ``speedup_vs_stepping`` instead.

The machine is noisy, so every configuration is run ``--repeat`` times, interleaved round-robin
(drift hits all configurations alike), and the fastest run is kept. Compare ratios within one
invocation, not absolute numbers across machines.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from chironsim.errors import ChironError
from chironsim.experiments.runner import run

BATCH_SIZES = (8, 32, 128, 512)


def scenario(batch: int, prompt: int, output: int, gpu: str, model: str,
             fast_forward: bool) -> dict[str, Any]:
    """One instance, a batch job of ``batch`` identical requests at t = 0.

    ``max_num_seqs`` is raised above every batch size so that all requests run at once; the
    sampling interval is long so the periodic timeseries sampler stays out of the measurement.
    """
    return {
        "name": f"bench-iteration-b{batch}",
        "seed": 0,
        "sample_interval_s": 3600.0,
        "classes": {"batch": {"priority": 1}},
        "workload": {"streams": [{
            "kind": "batch",
            "request_class": "batch",
            "num_requests": batch,
            "submit_at": 0.0,
            "deadline_s": 86_400.0,
            "prompt_tokens": {"kind": "fixed", "value": prompt},
            "output_tokens": {"kind": "fixed", "value": output},
        }]},
        "cluster": {
            "model": model,
            "gpu": gpu,
            "engine": {
                "max_num_seqs": max(BATCH_SIZES + (batch,)) * 2,
                "max_num_batched_tokens": max(8192, batch * prompt),
                "fast_forward": fast_forward,
            },
            "pools": {"default": {"instances": 1, "tp": 1}},
        },
        "policy": {"kind": "static", "router": {"kind": "least_outstanding"}},
    }


def _one_run(config: dict[str, Any]) -> tuple[float, int, int]:
    """Loop wall seconds, iterations and preemptions of one run."""
    result = run(config)
    iterations = int(result.instances["iterations"].sum())
    preemptions = int(result.requests["preemptions"].sum())
    return float(result.manifest["wall_seconds"]), iterations, preemptions


def measure(batches: list[int], prompt: int, long_out: int, short_out: int, gpu: str,
            model: str, repeat: int) -> list[dict[str, Any]]:
    """One row per (batch size, mode) with the fastest of ``repeat`` interleaved runs."""
    keys = [(b, False, out) for b in batches for out in (short_out, long_out)]
    keys += [(b, True, long_out) for b in batches]
    configs = {k: scenario(k[0], prompt, k[2], gpu, model, k[1]) for k in keys}
    best: dict[tuple[int, bool, int], tuple[float, int, int]] = {}
    for _ in range(repeat):
        for key in keys:
            wall, iterations, preempted = _one_run(configs[key])
            if key in best and best[key][1] != iterations:
                raise RuntimeError(f"iterations changed between repeats for {key}")
            if key not in best or wall < best[key][0]:
                best[key] = (wall, iterations, preempted)
    rows = []
    for ff in (False, True):
        for b in batches:
            wall_l, it_l, pre_l = best[(b, ff, long_out)]
            row: dict[str, Any] = {
                "batch": b,
                "fast_forward": ff,
                "iterations": it_l,
                "wall_seconds": wall_l,
                "us_per_iteration": wall_l / it_l * 1e6,
                "iterations_per_wall_second": it_l / wall_l,
                "preemptions": pre_l,
            }
            if ff:
                row["speedup_vs_stepping"] = best[(b, False, long_out)][0] / wall_l
            else:
                wall_s, it_s, _ = best[(b, False, short_out)]
                row["marginal_us_per_iteration"] = (wall_l - wall_s) / (it_l - it_s) * 1e6
            rows.append(row)
    stepping = [r for r in rows if not r["fast_forward"]]
    for r in stepping:
        r["marginal_vs_smallest_batch"] = (r["marginal_us_per_iteration"]
                                           / stepping[0]["marginal_us_per_iteration"])
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    """Two fixed-width tables: stepping (with the marginal cost) and fast-forward (with its gain)."""
    step = [r for r in rows if not r["fast_forward"]]
    fast = [r for r in rows if r["fast_forward"]]
    head = (f"{'B':>5} {'iters':>7} {'wall ms':>9} {'us/iter':>9} {'marg us/iter':>13} "
            f"{'marg vs B=' + str(step[0]['batch']):>13}")
    lines = ["stepping every iteration (fast_forward: false)", head, "-" * len(head)]
    lines += [f"{r['batch']:>5} {r['iterations']:>7} {r['wall_seconds'] * 1e3:>9.1f} "
              f"{r['us_per_iteration']:>9.1f} {r['marginal_us_per_iteration']:>13.1f} "
              f"{r['marginal_vs_smallest_batch']:>12.2f}x" for r in step]
    head = (f"{'B':>5} {'iters':>7} {'wall ms':>9} {'us/iter':>9} {'iters/wall s':>13} "
            f"{'vs stepping':>13}")
    lines += ["", "fast-forward on", head, "-" * len(head)]
    lines += [f"{r['batch']:>5} {r['iterations']:>7} {r['wall_seconds'] * 1e3:>9.1f} "
              f"{r['us_per_iteration']:>9.1f} {r['iterations_per_wall_second']:>13,.0f} "
              f"{r['speedup_vs_stepping']:>12.1f}x" for r in fast]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, nargs="+", default=list(BATCH_SIZES),
                        help="batch sizes B (requests running at once)")
    parser.add_argument("--prompt", type=int, default=16, help="prompt tokens of every request")
    parser.add_argument("--output", type=int, default=768,
                        help="output tokens of every request (the long run)")
    parser.add_argument("--short-output", type=int, default=192,
                        help="output tokens of the short run used for the marginal cost")
    parser.add_argument("--gpu", default="h100-sxm", help="GPU name from the catalog")
    parser.add_argument("--model", default="llama-3-8b", help="model name from the catalog")
    parser.add_argument("--repeat", type=int, default=7, help="runs per configuration (fastest kept)")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    args = parser.parse_args(argv)

    if min(args.batches) < 1 or args.prompt < 1 or args.repeat < 1:
        parser.error("--batches, --prompt and --repeat must be at least 1")
    if not 1 <= args.short_output < args.output:
        parser.error("--short-output must be at least 1 and less than --output")
    try:
        rows = measure(sorted(set(args.batches)), args.prompt, args.output, args.short_output,
                       args.gpu, args.model, args.repeat)
    except ChironError as err:
        print(f"bench_iteration_cost: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"gpu": args.gpu, "model": args.model, "prompt": args.prompt,
                          "output": args.output, "short_output": args.short_output,
                          "repeat": args.repeat, "rows": rows}))
    else:
        print(format_table(rows))
        if any(r["preemptions"] for r in rows):
            print("note: some runs preempted requests (KV cache full); lower --output for a "
                  "pure decode measurement", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
