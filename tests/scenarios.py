"""Small scenario builders shared by the correctness tests (DESIGN.md §8).

Each builder returns a plain config dict, as a user would write it in YAML, so the tests
exercise the same validation and wiring as ``chironsim run``. Also here: the bare service time
of a request computed straight from the perf model, which the analytical and metamorphic tests
compare the simulator against, and a way to keep the :class:`Simulation` object of a run (the
public ``runner.run`` returns only tables) for checks on its internal state.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from chironsim.catalog import get_gpu, get_model
from chironsim.experiments.config import parse_config
from chironsim.experiments import runner
from chironsim.perf.roofline import IterationTimeModel, prefill_attention_work
from chironsim.sim.world import Simulation

MODEL = "llama-3-8b"
GPU = "h100-sxm"


def synthetic(
    arrival: dict[str, Any],
    prompt: dict[str, Any],
    output: dict[str, Any],
    *,
    num_requests: int | None = None,
    duration_s: float | None = None,
    request_class: str = "default",
    max_prompt_tokens: int | None = None,
    max_output_tokens: int | None = None,
) -> dict[str, Any]:
    """One synthetic stream."""
    stream: dict[str, Any] = {
        "kind": "synthetic", "request_class": request_class, "arrival": arrival,
        "prompt_tokens": prompt, "output_tokens": output,
    }
    if num_requests is not None:
        stream["num_requests"] = num_requests
    if duration_s is not None:
        stream["duration_s"] = duration_s
    if max_prompt_tokens is not None:
        stream["max_prompt_tokens"] = max_prompt_tokens
    if max_output_tokens is not None:
        stream["max_output_tokens"] = max_output_tokens
    return stream


def fixed(value: int) -> dict[str, Any]:
    return {"kind": "fixed", "value": value}


def scenario(
    streams: list[dict[str, Any]],
    *,
    seed: int = 0,
    instances: int = 1,
    model: str = MODEL,
    gpu: str = GPU,
    engine: dict[str, Any] | None = None,
    policy: dict[str, Any] | None = None,
    pool: dict[str, Any] | None = None,
    classes: dict[str, Any] | None = None,
    duration_s: float | None = None,
    drain_s: float = 600.0,
    sample_interval_s: float = 1000.0,
) -> dict[str, Any]:
    """A one-pool scenario; ``sample_interval_s`` is large by default (timeseries unused)."""
    pool_cfg: dict[str, Any] = {"instances": instances, **(pool or {})}
    cfg: dict[str, Any] = {
        "name": "test",
        "seed": seed,
        "drain_s": drain_s,
        "sample_interval_s": sample_interval_s,
        "workload": {"streams": copy.deepcopy(streams)},
        "cluster": {
            "model": model,
            "gpu": gpu,
            "engine": dict(engine or {}),
            "pools": {"default": pool_cfg},
        },
        "policy": copy.deepcopy(policy) if policy else {"kind": "static"},
    }
    if duration_s is not None:
        cfg["duration_s"] = duration_s
    if classes is not None:
        cfg["classes"] = copy.deepcopy(classes)
    return cfg


def single_server(streams: list[dict[str, Any]], *, seed: int = 0, **kw: Any) -> dict[str, Any]:
    """One instance with batch size 1: a FIFO single-server queue."""
    engine = {"max_num_seqs": 1, **kw.pop("engine", {})}
    return scenario(streams, seed=seed, instances=1, engine=engine, **kw)


# --- bare service times from the perf model ------------------------------------------------


def perf_model(model: str = MODEL, gpu: str = GPU, tp: int = 1) -> IterationTimeModel:
    return IterationTimeModel(get_model(model), get_gpu(gpu), tp)


def prefill_time(perf: IterationTimeModel, prompt: int, budget: int = 8192) -> float:
    """Time to the first token of a lone request: its prompt in chunks of at most ``budget``."""
    total, done = 0.0, 0
    while done < prompt:
        n = min(budget, prompt - done)
        total += float(perf.iteration_time(n, float(prefill_attention_work(n, done)), 0, 0))
        done += n
    return total


def service_time(perf: IterationTimeModel, prompt: int, output: int, budget: int = 8192) -> float:
    """Bare e2e of a lone request: prefill, then ``output - 1`` decode iterations of batch 1.

    The first decode iteration writes the KV of token ``prompt + 1``, so its context is
    ``prompt + 1``; the j-th has ``prompt + j``. Summed one iteration at a time (the order in
    which the simulator accumulates its clock).
    """
    total = prefill_time(perf, prompt, budget)
    for j in range(1, output):
        total += float(perf.iteration_time(0, 0.0, 1, prompt + j))
    return total


def decode_times(perf: IterationTimeModel, prompt: int, max_output: int) -> np.ndarray:
    """``d[j - 1]``: duration of the j-th decode iteration (context prompt + j), j = 1..max_output-1."""
    contexts = prompt + np.arange(1, max_output)
    return np.asarray(perf.iteration_time(0, 0.0, 1, contexts), dtype=float)


# --- a run that keeps its Simulation -------------------------------------------------------


def build_simulation(
    config: dict[str, Any],
    base_dir: Path | None = None,
    progress: Callable[[float], None] | None = None,
) -> Simulation:
    """The Simulation ``runner.run`` would run (same wiring and seed streams), not yet run,
    so tests can reach the instances' allocators."""
    cfg = parse_config(config, "<test>", base_dir or Path.cwd())
    return runner.build_simulation(cfg, base_dir or Path.cwd(), progress)[0]


def light_scenario(name: str, seed: int, duration_s: float, **extra: Any) -> dict[str, Any]:
    """A scenario that simulates in a fraction of a second: light Poisson traffic of fixed
    100-in/20-out requests on one H100 for ``duration_s``; ``extra`` adds top-level keys."""
    return {
        "name": name,
        "seed": seed,
        "duration_s": duration_s,
        "drain_s": 60,
        "classes": {"interactive": {"slo": {"ttft": 2.0, "tpot": 0.1}}},
        "workload": {"streams": [{
            "kind": "synthetic",
            "request_class": "interactive",
            "arrival": {"kind": "poisson", "rate": 2.0},
            "prompt_tokens": {"kind": "fixed", "value": 100},
            "output_tokens": {"kind": "fixed", "value": 20},
            "duration_s": duration_s,
        }]},
        "cluster": {"model": "llama-3-8b", "gpu": "h100-sxm",
                    "pools": {"default": {"instances": 1}}},
        **extra,
    }


def fast_forward_scenario(fast_forward: bool, engine: dict[str, Any] | None = None) -> dict[str, Any]:
    """Three instances with a small KV cache (≈170 blocks) so that recompute preemptions
    happen: the scenario the fast-forward parity tests compare with it on and off.
    ``engine``: more engine settings (a preset, a scheduler) laid over the small cache."""
    stream = synthetic({"kind": "poisson", "rate": 7.0},
                       {"kind": "lognormal", "median": 250, "sigma": 0.8},
                       {"kind": "lognormal", "median": 250, "sigma": 0.8},
                       duration_s=25.0, max_prompt_tokens=1200, max_output_tokens=1000)
    return scenario([stream], seed=4, instances=3,
                    engine={"gpu_memory_utilization": 0.195, "max_num_seqs": 48,
                            "max_num_batched_tokens": 1024, "fast_forward": fast_forward,
                            **(engine or {})},
                    policy={"kind": "static", "router": {"kind": "round_robin"}})
