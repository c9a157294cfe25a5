"""Public whole-request latencies (catalog/reference_latencies.yaml) replayed through the model.

A case is one prefill iteration of batch x prompt tokens and then output_tokens - 1 decode
iterations, the schedule a static-batch latency benchmark runs. Replaying it gives the
model's prediction and the number of iterations, which is what fitting a per-iteration
overhead needs.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources

import numpy as np
import yaml

from chironsim.catalog import get_gpu, get_model
from chironsim.perf.comm import CommModel
from chironsim.perf.efficiency import Efficiency
from chironsim.perf.roofline import IterationTimeModel, prefill_attention_work


@dataclass(frozen=True, slots=True)
class ReferenceCase:
    name: str
    model: str
    gpu: str
    tp: int
    batch: int
    prompt_tokens: int
    output_tokens: int
    measured_s: float
    source: str

    @property
    def iterations(self) -> int:
        return self.output_tokens


@functools.cache
def reference_cases() -> tuple[ReferenceCase, ...]:
    text = resources.files("chironsim.catalog").joinpath("reference_latencies.yaml").read_text("utf-8")
    return tuple(ReferenceCase(**entry) for entry in yaml.safe_load(text))


def replay_seconds(case: ReferenceCase, efficiency: Efficiency, comm: CommModel | None = None) -> float:
    """Predicted seconds for the whole case under `efficiency` and `comm` (default: the GPU's
    shipped curves), overhead included."""
    timer = IterationTimeModel(get_model(case.model), get_gpu(case.gpu), case.tp, efficiency, comm)
    prompt = case.prompt_tokens
    total = timer.iteration_time(
        case.batch * prompt, case.batch * prefill_attention_work(prompt, 0.0), 0, 0.0
    )
    if case.output_tokens > 1:
        steps = np.arange(1, case.output_tokens)
        total += float(np.sum(timer.iteration_time(0, 0.0, case.batch, case.batch * (prompt + steps))))
    return total
