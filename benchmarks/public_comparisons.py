"""Whole-request and whole-iteration comparisons of the latency model with public figures.

Each case below is one number an engine's authors (or a vendor) published for a configuration
stated well enough to replay: model, GPU, tensor parallelism, precision, batch, prompt and
output lengths. None of them was used to fit anything: the kernel factors come from the
per-operator profiles (chironsim/perf/calibrate.py) and the engine presets from the sources
named in chironsim/catalog/engines.yaml. The six public figures the default per-iteration
overhead *was* fitted to are in docs/latency-model.md, section 4, not here. Nothing in
chironsim is tuned to these numbers; they are a sanity check only.

A case is replayed as the benchmark that produced it runs (the same schedule as
chironsim/perf/reference.py): one prefill iteration of batch x prompt tokens, then
``output - 1`` decode iterations of the whole batch with the context growing by one token a
step. The figure compared is then, per the source's metric:

- ``ttft``: the prefill iteration alone (first-token latency at that batch);
- ``request``: prefill plus all decode iterations (a static batch's end-to-end latency;
  sources that publish output tokens per second give ``batch x output / throughput``);
- ``per_token``: ``request / output`` (a batch-1 tokens-per-second figure, inverted);
- ``itl``: the mean decode iteration of the request (a mean inter-token latency).

``chironsim`` is the model with the engine's preset where chironsim has one
(``tensorrt-llm``), else the ``default`` preset; ``kernels only`` is the same model with no
engine overhead at all, to show how much of the prediction is the overhead term.

    python benchmarks/public_comparisons.py            # markdown table + per-source summary
    python benchmarks/public_comparisons.py --json     # one JSON object per case

docs/latency-model.md ("Whole-request comparisons with public figures") reproduces the table
and says where each number comes from.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from chironsim.catalog import get_gpu, get_model
from chironsim.perf import IterationTimeModel, Precision, kv_capacity_blocks, prefill_attention_work
from chironsim.perf.overhead import EngineOverhead, engine_preset

METRICS = ("ttft", "request", "per_token", "itl")


@dataclass(frozen=True, slots=True)
class Source:
    key: str
    label: str
    url: str
    notes: str


SOURCES = {
    s.key: s
    for s in (
        Source(
            "trtllm-ttft",
            "TensorRT-LLM v0.5, H100 FP8, first-token latency",
            "https://github.com/NVIDIA/TensorRT-LLM/blob/77d24b5fa178f11ed7fafdd9833b7245e075f721/docs/source/performance.md",
            "docs/source/performance.md, 'Low Latency' section ('The following data is from "
            "TensorRT-LLM v0.5'), table 'H100 GPUs (FP8)', column '1st Token Latency (ms)', "
            "batch 1. Engines built with --enable_fp8 --fp8_kv_cache (the page's build commands); "
            "'LLaMA 7B/70B' are built as Llama-2-7B/70B (n_kv_head 8 for the 70B). "
            "gptSessionBenchmark with one output token.",
        ),
        Source(
            "trtllm-static",
            "TensorRT-LLM v0.5, H100 FP8, static-batch throughput",
            "https://raw.githubusercontent.com/NVIDIA/TensorRT-LLM/release/0.5.0/docs/source/performance.md",
            "release/0.5.0 docs/source/performance.md, 'High Throughput', table 'H100 GPUs (FP8)', "
            "column 'Throughput (out tok/s)'. gptSessionBenchmark runs one static batch per "
            "generate() call and reports its latency; throughput = batch x output / latency, so "
            "a batch's latency is batch x output / throughput. FP8 weights and FP8 KV cache.",
        ),
        Source(
            "lmdeploy",
            "LMDeploy (TurboMind) v0.1.0a1, A100-80G FP16, static inference",
            "https://github.com/InternLM/lmdeploy/blob/ebe90bc943eeace841b33fa54fbf1726311b63db/docs/en/benchmark/a100_fp16.md",
            "docs/en/benchmark/a100_fp16.md ('tested on (x8) A100-80G CUDA 11.8', 'lmdeploy "
            "version is v0.1.0a1'), 'Static Inference Benchmark'. benchmark/profile_generation.py "
            "at the same commit: throughput(out tok/s) = output tokens of all requests / wall "
            "time, with `concurrency` threads each running requests back to back, so at batch 1 "
            "a request takes output / throughput; FTL(ave) is the mean first-token latency. "
            "The A100 form factor is not stated (SXM assumed).",
        ),
        Source(
            "gpt-fast",
            "gpt-fast, 8 x A100-80GB at 330 W, batch 1",
            "https://github.com/pytorch-labs/gpt-fast/blob/32971d3129541c5bfb4f715abc33d1c5f408d204/README.md",
            "README 'Benchmarks' / 'Tensor Parallelism', 'Base' (BF16) rows: 'Benchmarks run on "
            "an 8xA100-80GB, power limited to 330W with a hybrid cube mesh topology ... batch "
            "size=1 ... a very small prompt length (just 5 tokens)'. generate.py: 200 new tokens "
            "by default, tokens/s = generated tokens / time of the whole generate() call "
            "(prefill included); CUDA graphs through torch.compile(mode='reduce-overhead').",
        ),
        Source(
            "nim",
            "NVIDIA NIM 1.8.0, Llama-3.3-70B-Instruct, 2 x H100 80G, FP8 TP2, concurrency 1",
            "https://docs.nvidia.com/nim/benchmarking/llm/1.0.0/performance.md",
            "NIM benchmarking guide, 'Performance', 'Llama-3.3-70b-instruct Results', 'Version: "
            "1.8.0', '2 x H100 80G', 'fp8 TP2', concurrency 1 rows (AIPerf, client-side, "
            "streaming over HTTP). Llama-3.3-70B has Llama-3.1-70B's architecture. The KV-cache "
            "dtype and the engine behind the container are not stated (BF16 KV replayed; an "
            "FP8 KV cache moves these four predictions by under 1 %).",
        ),
    )
}


@dataclass(frozen=True, slots=True)
class Case:
    source: str
    model: str
    gpu: str
    tp: int
    batch: int
    prompt: int
    output: int
    metric: str
    published: float  # as printed in the source, in `unit`
    unit: str  # ms | s | out tok/s
    quote: str  # the row as the source prints it
    dtype: str = "bf16"
    kv_cache_dtype: str = "auto"
    preset: str = "default"

    def published_seconds(self) -> float:
        """The published figure as seconds of the compared metric."""
        if self.unit == "ms":
            return self.published / 1e3
        if self.unit == "s":
            return self.published
        if self.unit == "out tok/s":
            request = self.batch * self.output / self.published
            return request / self.output if self.metric == "per_token" else request
        raise ValueError(f"unknown unit {self.unit!r}")


def _trt_ttft(model: str, tp: int, prompt: int, ms: float, name: str) -> Case:
    return Case("trtllm-ttft", model, "H100-SXM", tp, 1, prompt, 1, "ttft", ms, "ms",
                f"| {name} | 1 | {tp} | {prompt} | {ms:g} |", "fp8", "fp8", "tensorrt-llm")


def _trt_static(model: str, batch: int, tp: int, prompt: int, output: int, tok_s: float, name: str) -> Case:
    return Case("trtllm-static", model, "H100-SXM", tp, batch, prompt, output, "request", tok_s, "out tok/s",
                f"| {name} | {batch} | {tp} | {prompt} | {output} | {tok_s:,.0f} |", "fp8", "fp8", "tensorrt-llm")


def _lmd(model: str, tp: int, batch: int, prompt: int, output: int, metric: str, value: float, unit: str,
         row: str) -> Case:
    return Case("lmdeploy", model, "A100-80GB", tp, batch, prompt, output, metric, value, unit, row)


def _gptfast(model: str, tp: int, tok_s: float, name: str) -> Case:
    return Case("gpt-fast", model, "A100-80GB", tp, 1, 5, 200, "per_token", tok_s, "out tok/s",
                f"| {name} | {tp} | {tok_s} |")


# LMDeploy rows as printed: batch | tp | prompt | output | throughput | mem | FTL(ave) | ...
_LMD_ROWS = {
    ("Llama-2-7B", 1, 128): "| 1 | 1 | 128 | 128 | 102.21 | 76.59 | 0.022 |",
    ("Llama-2-7B", 1, 2048): "| 1 | 1 | 2048 | 128 | 86.1 | 76.77 | 0.139 |",
    ("Llama-2-13B", 1, 128): "| 1 | 1 | 128 | 128 | 56.58 | 74.84 | 0.04 |",
    ("Llama-2-13B", 1, 2048): "| 1 | 1 | 2048 | 128 | 48.99 | 75.09 | 0.242 |",
    ("Llama-2-70B", 4, 128): "| 1 | 4 | 128 | 128 | 33.63 | 73.72 | 0.074 |",
    ("Llama-2-70B", 4, 2048): "| 1 | 4 | 2048 | 128 | 28.32 | 73.78 | 0.402 |",
}
_LMD_VALUES = {  # (throughput out tok/s, FTL(ave) s) of the rows above
    ("Llama-2-7B", 1, 128): (102.21, 0.022),
    ("Llama-2-7B", 1, 2048): (86.1, 0.139),
    ("Llama-2-13B", 1, 128): (56.58, 0.040),
    ("Llama-2-13B", 1, 2048): (48.99, 0.242),
    ("Llama-2-70B", 4, 128): (33.63, 0.074),
    ("Llama-2-70B", 4, 2048): (28.32, 0.402),
}


def cases() -> tuple[Case, ...]:
    out: list[Case] = [
        _trt_ttft("Llama-2-7B", 1, 128, 7, "LLaMA 7B"),
        _trt_ttft("Llama-2-7B", 1, 2048, 36, "LLaMA 7B"),
        _trt_ttft("Llama-2-70B", 4, 128, 26, "LLaMA 70B"),
        _trt_ttft("Llama-2-70B", 4, 2048, 109, "LLaMA 70B"),
        _trt_static("Llama-2-7B", 64, 1, 128, 128, 9193, "LLaMA 7B"),
        _trt_static("Llama-2-7B", 64, 1, 128, 2048, 5367, "LLaMA 7B"),
        _trt_static("Llama-2-7B", 64, 1, 2048, 128, 2058, "LLaMA 7B"),
        _trt_static("Llama-2-7B", 32, 1, 2048, 2048, 2230, "LLaMA 7B"),
        _trt_static("Llama-2-70B", 64, 4, 128, 128, 3317, "LLaMA 70B"),
        _trt_static("Llama-2-70B", 64, 4, 128, 2048, 2616, "LLaMA 70B"),
        _trt_static("Llama-2-70B", 64, 4, 2048, 128, 843, "LLaMA 70B"),
        _trt_static("Llama-2-70B", 64, 4, 2048, 2048, 1583, "LLaMA 70B"),
    ]
    for (model, tp, prompt), row in _LMD_ROWS.items():
        tok_s, ftl = _LMD_VALUES[(model, tp, prompt)]
        out.append(_lmd(model, tp, 1, prompt, 1, "ttft", ftl, "s", row))
        out.append(_lmd(model, tp, 1, prompt, 128, "request", tok_s, "out tok/s", row))
    out += [
        _lmd("Llama-2-7B", 1, 64, 1, 128, "request", 4154.81, "out tok/s", "| 64 | 1 | 1 | 128 | 4154.81 |"),
        _lmd("Llama-2-13B", 1, 64, 1, 128, "request", 3049.16, "out tok/s", "| 64 | 1 | 1 | 128 | 3049.16 |"),
        _lmd("Llama-2-70B", 4, 64, 1, 128, "request", 1425.79, "out tok/s", "| 64 | 4 | 1 | 128 | 1425.79 |"),
    ]
    for model, name, rows in (
        ("Llama-2-7B", "Llama-2-7B", ((1, 104.9), (2, 168.84), (4, 254.02), (8, 328.43))),
        ("Llama-2-70B", "Llama-2-70B", ((2, 21.32), (4, 38.01), (8, 62.50))),
        ("Llama-3.1-8B", "Llama-3.1-8B", ((1, 93.89), (2, 149.10), (4, 217.21), (8, 276.01))),
        ("Llama-3.1-70B", "Llama-3.1-70B", ((2, 16.03), (4, 37.45), (8, 58.78))),
    ):
        out += [_gptfast(model, tp, tok_s, name) for tp, tok_s in rows]
    nim = dict(source="nim", model="Llama-3.1-70B", gpu="H100-SXM", tp=2, batch=1, dtype="fp8")
    out += [
        Case(**nim, prompt=5000, output=500, metric="ttft", published=406.77, unit="ms",
             quote="5000 Input Tokens / 500 Output Tokens: | 1 | 406.77 | 18.58 | 51.67 |"),
        Case(**nim, prompt=5000, output=500, metric="itl", published=18.58, unit="ms",
             quote="5000 Input Tokens / 500 Output Tokens: | 1 | 406.77 | 18.58 | 51.67 |"),
        Case(**nim, prompt=500, output=2000, metric="ttft", published=47.77, unit="ms",
             quote="500 Input Tokens / 2000 Output Tokens: | 1 | 47.77 | 18.91 | 52.85 |"),
        Case(**nim, prompt=500, output=2000, metric="itl", published=18.91, unit="ms",
             quote="500 Input Tokens / 2000 Output Tokens: | 1 | 47.77 | 18.91 | 52.85 |"),
    ]
    return tuple(out)


def _timer(case: Case, overhead: EngineOverhead) -> IterationTimeModel:
    return IterationTimeModel(get_model(case.model), get_gpu(case.gpu), case.tp,
                              precision=Precision(case.dtype, case.kv_cache_dtype), overhead=overhead)


def predict_seconds(case: Case, timer: IterationTimeModel) -> float:
    """The replayed figure for `case` under `timer` (see the module docstring)."""
    b, p, o = case.batch, case.prompt, case.output
    prefill = float(timer.iteration_time(b * p, b * prefill_attention_work(p, 0.0), 0, 0.0))
    if case.metric == "ttft":
        return prefill
    steps = np.arange(1, o)
    decodes = np.asarray(timer.iteration_time(0, 0.0, b, b * (p + steps)), dtype=float) if o > 1 else np.zeros(0)
    if case.metric == "itl":
        return float(np.mean(decodes))
    request = prefill + float(np.sum(decodes))
    return request / o if case.metric == "per_token" else request


def fits_kv(case: Case) -> bool:
    """Whether chironsim's memory model (defaults: 90 % of memory, blocks of 16) holds the
    whole batch at its final length; informational only."""
    blocks = kv_capacity_blocks(get_model(case.model), get_gpu(case.gpu), case.tp,
                                precision=Precision(case.dtype, case.kv_cache_dtype))
    return case.batch * math.ceil((case.prompt + case.output) / 16) <= blocks


def describe(case: Case) -> str:
    precision = "BF16" if case.dtype == "bf16" else "FP8 weights"
    if case.kv_cache_dtype == "fp8":
        precision += " + FP8 KV"
    lengths = f"{case.prompt} in" if case.metric == "ttft" else f"{case.prompt} in / {case.output} out"
    return (f"{case.model}, {case.tp} x {case.gpu}, {precision}, batch {case.batch}, {lengths}")


def compute() -> list[dict[str, Any]]:
    """One row per case: the published and predicted seconds and the relative error."""
    kernels_only = EngineOverhead(constant_s=0.0)
    rows = []
    for index, case in enumerate(cases(), start=1):
        published = case.published_seconds()
        predicted = predict_seconds(case, _timer(case, engine_preset(case.preset).overhead()))
        bare = predict_seconds(case, _timer(case, kernels_only))
        rows.append({
            "id": index,
            "source": case.source,
            "source_label": SOURCES[case.source].label,
            "url": SOURCES[case.source].url,
            "configuration": describe(case),
            "metric": case.metric,
            "preset": case.preset,
            "published": case.published,
            "published_unit": case.unit,
            "quote": case.quote,
            "published_s": published,
            "chironsim_s": predicted,
            "kernels_only_s": bare,
            "error_pct": 100.0 * (predicted / published - 1.0),
            "kernels_only_error_pct": 100.0 * (bare / published - 1.0),
            "fits_kv": fits_kv(case),
            "case": asdict(case),
        })
    return rows


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per source: cases, median absolute error, the range of signed errors."""
    out = []
    for key in SOURCES:
        errors = [r["error_pct"] for r in rows if r["source"] == key]
        bare = [r["kernels_only_error_pct"] for r in rows if r["source"] == key]
        if errors:
            out.append({"source": key, "cases": len(errors),
                        "median_abs_error_pct": statistics.median(abs(e) for e in errors),
                        "min_error_pct": min(errors), "max_error_pct": max(errors),
                        "kernels_only_median_abs_error_pct": statistics.median(abs(e) for e in bare)})
    return out


def _shown(seconds: float) -> str:
    return f"{seconds * 1e3:,.1f} ms" if seconds < 10 else f"{seconds:,.1f} s"


def _published(row: dict[str, Any]) -> str:
    value, unit = row["published"], row["published_unit"]
    if unit == "out tok/s":
        return f"{value:,} tok/s → {_shown(row['published_s'])}"
    return f"{value:g} {unit}"


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| # | source | configuration | metric | published | chironsim | error | kernels only |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        mark = "" if r["fits_kv"] else " †"
        lines.append(
            f"| {r['id']} | [{r['source']}] | {r['configuration']}{mark} | {r['metric']} | "
            f"{_published(r)} | {_shown(r['chironsim_s'])} | {r['error_pct']:+.1f} % | "
            f"{r['kernels_only_error_pct']:+.1f} % |")
    lines += ["", "| source | cases | median abs. error | signed range | kernels only: median abs. error |",
              "|---|---|---|---|---|"]
    for s in summarise(rows):
        lines.append(f"| [{s['source']}] | {s['cases']} | {s['median_abs_error_pct']:.1f} % | "
                     f"{s['min_error_pct']:+.1f} … {s['max_error_pct']:+.1f} % | "
                     f"{s['kernels_only_median_abs_error_pct']:.1f} % |")
    lines += [""] + [f"[{key}]: {source.url}" for key, source in SOURCES.items()]
    if not all(r["fits_kv"] for r in rows):
        lines += ["", "† the whole batch at its final length does not fit chironsim's default KV "
                  "budget (90 % of memory); the replay prices it anyway."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    args = parser.parse_args(argv)
    rows = compute()
    if args.json:
        print(json.dumps({"rows": rows, "summary": summarise(rows)}, indent=1))
    else:
        print(markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
