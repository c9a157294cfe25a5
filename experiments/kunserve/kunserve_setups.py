"""Scenarios of the KunServe experiment (issue 10 item 4): the hardware points, the four
policies, the K2 workloads (two Azure 2023 windows and a synthetic BurstGPT-like burst) and
K1's single-group burst, each a plain scenario mapping for ``chironsim.experiments.runner``.

Why each choice was made: REPORT.md. In short:

- **Hardware** (:data:`HARDWARE`): four model × GPU points spanning the ratio of droppable
  weights W to KV memory M_kv of one instance (``perf.drop``): Llama-3.1-8B on A100-80GB (W/M_kv
  0.23, GQA: KV is plentiful), Llama-3.1-70B TP 4 on A100-80GB (0.82) and Llama-2-7B on A10
  (1.36, MHA on a 24 GB card: weights dominate), and Llama-3-8B on A10 (2.06: GQA, but 16 GB of
  weights on a 24 GB card). The paper publishes none of its own.
- **Policies** (:data:`POLICIES`), one dispatch rule for the baselines (the released
  benchmark's client: the instance with the fewest outstanding requests):
  ``vllm`` (recompute preemption, vLLM's default), ``swap`` (swap preemption to host memory:
  an InferCept-like approximation, not InferCept — InferCept picks per request between
  discarding, swapping and preserving KV by a waste model, which chironsim does not have),
  ``llumnix`` (``policy: {kind: llumnix}``: freeness dispatch and live migration, one
  priority, no scaling) and ``kunserve`` (``policy: {kind: kunserve}``, its defaults: g = 2,
  per-group triggers, live KV exchange).
- **Context**: Llama-2-7B's is 4,096 tokens, so every workload is clipped to prompt ≤ 3,584
  and output ≤ 512 tokens on every hardware point (one workload per trace across hardware;
  the share clipped is in ``k2_workloads.csv``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
TRACES = (HERE / ".." / ".." / ".." / "shared" / "traces").resolve()

#: Per-column clips (Llama-2-7B's 4,096-token context: 3,584 + 512).
MAX_PROMPT = 3584
MAX_OUTPUT = 512


@dataclass(frozen=True)
class Hardware:
    key: str
    model: str
    gpu: str
    tp: int
    instances: int


#: Four instances = two KunServe groups of g = 2 at every point.
HARDWARE: dict[str, Hardware] = {
    "8b-a100": Hardware("8b-a100", "llama-3.1-8b", "a100-80gb", 1, 4),
    "70b-a100": Hardware("70b-a100", "llama-3.1-70b", "a100-80gb", 4, 4),
    "7b-a10": Hardware("7b-a10", "llama-2-7b", "a10", 1, 4),
    "8b-a10": Hardware("8b-a10", "llama-3-8b", "a10", 1, 4),
}

#: name -> (policy mapping, engine overrides)
POLICIES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "vllm": ({"kind": "static", "router": {"kind": "least_outstanding"}}, {"preemption_mode": "recompute"}),
    "swap": ({"kind": "static", "router": {"kind": "least_outstanding"}}, {"preemption_mode": "swap"}),
    "llumnix": ({"kind": "llumnix", "dispatch": "llumnix", "migration": True, "priority_agnostic": True,
                 "scaling": False}, {}),
    "kunserve": ({"kind": "kunserve"}, {}),
}
POLICY_LABELS = {"vllm": "vLLM (recompute)", "swap": "swap (InferCept-like approx.)",
                 "llumnix": "Llumnix", "kunserve": "KunServe"}
SEEDS = (1, 2, 3)


# --- workloads ------------------------------------------------------------------------------

@dataclass(frozen=True)
class TraceWindow:
    """Rows [offset, offset + count) of a trace (0-based, in arrival order). The Azure ones are
    the paper's windows (reference/llumnix_kunserve.md B.3); the Mooncake one is chosen here
    (mid-trace, on a 3-s bucket boundary), for the A100 points only."""

    key: str
    file: str
    format: str
    offset: int
    count: int
    max_prompt: int | None = MAX_PROMPT
    max_output: int | None = MAX_OUTPUT


WINDOWS = {
    "conv": TraceWindow("conv", "azure_llm_2023_conv.csv", "azure", 9342, 759),
    "code": TraceWindow("code", "azure_llm_2023_code.csv", "azure", 5100, 927),
    # long contexts (mean prompt 11k tokens): only models with a 128k context take it unclipped
    "long": TraceWindow("long", "mooncake_conversation_trace.jsonl", "mooncake", 6000, 800, None, None),
}


@lru_cache(maxsize=None)
def window_bounds(key: str) -> tuple[float, float]:
    """``time_window`` [a, b) that, with ``limit: count``, selects exactly the window's rows:
    a = the first row's time, b = the last row's time + 1 ms, both relative to the trace's first
    arrival and computed by chironsim's own reader (the same floats the stream compares). Rows
    sharing a time are ordered by line, as the stream orders them; the row before the window
    must be strictly earlier (checked)."""
    from chironsim.workload.readers import read_trace
    from chironsim.workload.streams import sorted_rows

    w = WINDOWS[key]
    path = TRACES / w.file
    rows = sorted_rows(read_trace(path, w.format, None), 1.0, path)
    origin = before = start = None
    for i, row in enumerate(rows):
        if origin is None:
            origin = row.arrival
        t = row.arrival - origin
        if i == w.offset - 1:
            before = t
        if i == w.offset:
            if before is not None and not before < t:
                raise ValueError(f"{w.file}: row {w.offset} shares its time with the row before it")
            start = t
        if i == w.offset + w.count - 1:
            return start, t + 1e-3
    raise ValueError(f"{w.file} has fewer than {w.offset + w.count} rows")


def trace_stream(key: str, rate_scale: float) -> dict[str, Any]:
    a, b = window_bounds(key)
    w = WINDOWS[key]
    stream = {"kind": "trace", "format": w.format, "path": str(TRACES / w.file),
              "time_window": [a, b], "limit": w.count, "rate_scale": rate_scale}
    if w.max_prompt is not None:
        stream["max_prompt_tokens"] = w.max_prompt
    if w.max_output is not None:
        stream["max_output_tokens"] = w.max_output
    return stream


#: BurstGPT-like burst: lognormal lengths with the BurstGPT means Llumnix reports (830 in / 271
#: out) and the Azure-conversation log spreads (as experiments/llumnix/mixes.py defines them);
#: Poisson arrivals at a base rate for 60 s with one spike of SPIKE_FACTOR × that rate over
#: [20, 40) s (the paper's BurstGPT window is 775 requests of the real trace with its
#: timestamps ÷ 10, i.e. a ten-fold compression; the trace itself is not in ../shared/traces).
#: About 160 × base-rate requests per run.
BURST_PROMPT = {"kind": "lognormal", "mean": 830.0, "sigma": 0.985}
BURST_OUTPUT = {"kind": "lognormal", "mean": 271.0, "sigma": 0.859}
SPIKE_FACTOR = 6.0
SPIKE_START_S = 20.0
SPIKE_S = 20.0
BURST_DURATION_S = 60.0


def burst_stream(base_rate: float) -> dict[str, Any]:
    return {"kind": "synthetic", "duration_s": BURST_DURATION_S,
            "arrival": {"kind": "spike", "base_rate": base_rate, "spike_rate": SPIKE_FACTOR * base_rate,
                        "start_s": SPIKE_START_S, "duration_s": SPIKE_S},
            "prompt_tokens": BURST_PROMPT, "output_tokens": BURST_OUTPUT,
            "max_prompt_tokens": MAX_PROMPT, "max_output_tokens": MAX_OUTPUT}


def workload_stream(workload: str, load: float) -> dict[str, Any]:
    """``load``: the trace's ``rate_scale``, or the burst's base rate (req/s)."""
    return burst_stream(load) if workload == "burst" else trace_stream(workload, load)


# --- scenarios ------------------------------------------------------------------------------

def scenario(name: str, seed: int, hardware: Hardware, policy: str, streams: list[dict[str, Any]],
             *, sample_interval_s: float = 1.0, drain_s: float = 3600.0,
             policy_overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    settings, engine = POLICIES[policy]
    return {"name": name, "seed": seed, "drain_s": drain_s, "sample_interval_s": sample_interval_s,
            "classes": {"default": {"priority": 0, "slo": {"ttft": 10.0}}},
            "workload": {"streams": streams},
            "cluster": {"model": hardware.model, "gpu": hardware.gpu, "engine": dict(engine),
                        "pools": {"default": {"instances": hardware.instances, "tp": hardware.tp}}},
            "policy": {**settings, **(policy_overrides or {})}, "output": {"plots": False}}


def k2_scenario(workload: str, hardware: str, policy: str, load: float, seed: int,
                policy_overrides: dict[str, Any] | None = None, variant: str = "") -> dict[str, Any]:
    hw = HARDWARE[hardware]
    tag = f"-{variant}" if variant else ""
    return scenario(f"k2-{workload}-{hardware}-{policy}{tag}-x{load:g}-s{seed}", seed, hw, policy,
                    [workload_stream(workload, load)], policy_overrides=policy_overrides)


def fmt_load(workload: str, load: float) -> str:
    return f"base {load:g} req/s" if workload == "burst" else f"rate ×{load:g}"


def isfinite(x: float) -> bool:
    return x is not None and math.isfinite(x)
