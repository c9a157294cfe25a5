"""The request-length mixes of the Llumnix paper's Table 1, as chironsim synthetic length
distributions, and a builder of the ``synthetic`` stream that serves one of them.

What the evidence fixes (``../shared/reference/README.md``, Llumnix; ``llumnix_kunserve.md``
A.4): ShareGPT-like mean 306 input / 500 output tokens, BurstGPT-like 830 / 271, power-law
short / medium / long with means 128 / 256 / 512 and max 6k, combined for input and output
(which pairs the paper ran is not confirmed, so every input × output pair is listed).

- **Power law** (S/M/L): the generator of Llumnix's released benchmark
  (AlibabaPAI/llumnix ``benchmark/benchmark_serving.py``, ``gen_random_response_lens``,
  ``zipf``): ranks 1..2m−1 drawn with P(k) ∝ k^−α, α = 2.0 / 1.5 / 1.15 for m = 128 / 256 /
  512 (range 6144), multiplied by m ÷ (mean rank), rounded up, capped at 6144. In chironsim
  that is ``powerlaw`` with ``a = α``, ``min 1``, ``max 2m−1``, ``scale = m ÷ E[rank]`` and the
  stream's ``max_*_tokens: 6144``. One difference: the benchmark divides by the *sample's*
  mean rank, which pins every run's mean to m; chironsim draws i.i.d. from the population, so
  one run's mean fluctuates around m (by about ±2 % for L over 10k requests, see the test).
- **ShareGPT-like / BurstGPT-like**: the evidence gives their means only (neither dataset is
  in ``../shared/traces``). They are lognormals with those means and the log-space spreads of
  the maximum-likelihood fit to the Azure LLM 2023 conversation trace (``traces/
  azure_conv_fit.yaml``: σ 0.985 for prompts, 0.859 for outputs): a chat-trace shape, chosen,
  not the paper's. Only the means are the paper's.

Not applied here: the model's context. The paper's LLaMA-7B and -30B have 2,048 tokens; the
released benchmark drops a request whose prompt + output reaches ``max_seqlen``, which chironsim
does per column only (``max_*_tokens``). How L2 fits these mixes to a 2k context (and what that
does to the means) is a decision of L2, recorded in REPORT.md as pending.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from chironsim.workload.config import PowerLawLength, powerlaw_lengths, powerlaw_mean, powerlaw_weights

#: The cap of the power-law lengths (the benchmark's ``len_range``; the paper's "max 6k").
POWERLAW_CAP = 6144
#: Exponent of the benchmark's zipf per mean (its only supported means with range 6144).
POWERLAW_EXPONENT = {128: 2.0, 256: 1.5, 512: 1.15}
POWERLAW_CLASSES = {"S": 128, "M": 256, "L": 512}
#: Log-space spreads of the Azure 2023 conversation fit (traces/azure_conv_fit.yaml).
SIGMA_PROMPT = 0.98515
SIGMA_OUTPUT = 0.85901


def powerlaw(mean: int) -> dict[str, Any]:
    """The benchmark's power law of mean ``mean`` as a chironsim ``powerlaw`` distribution
    (before the 6144 cap, which the stream applies)."""
    alpha = POWERLAW_EXPONENT[mean]
    top = 2 * mean - 1
    scale = mean / powerlaw_mean(alpha, 1, top)
    return {"kind": "powerlaw", "a": alpha, "min": 1, "max": top, "scale": round(scale, 9)}


def lognormal(mean: float, sigma: float) -> dict[str, Any]:
    return {"kind": "lognormal", "mean": mean, "sigma": sigma}


@dataclass(frozen=True)
class Mix:
    """One length mix: its distributions, the clips that are part of its definition, and the
    means the paper states for it."""

    name: str
    prompt: dict[str, Any]
    output: dict[str, Any]
    paper_prompt_mean: float
    paper_output_mean: float
    max_prompt: int | None = None
    max_output: int | None = None

    def lengths(self) -> dict[str, Any]:
        """The length keys of a synthetic stream."""
        out: dict[str, Any] = {"prompt_tokens": dict(self.prompt), "output_tokens": dict(self.output)}
        if self.max_prompt is not None:
            out["max_prompt_tokens"] = self.max_prompt
        if self.max_output is not None:
            out["max_output_tokens"] = self.max_output
        return out


def _mixes() -> dict[str, Mix]:
    table = {
        "sharegpt": Mix("sharegpt", lognormal(306, SIGMA_PROMPT), lognormal(500, SIGMA_OUTPUT),
                        306, 500),
        "burstgpt": Mix("burstgpt", lognormal(830, SIGMA_PROMPT), lognormal(271, SIGMA_OUTPUT),
                        830, 271),
    }
    for i, m_in in POWERLAW_CLASSES.items():
        for o, m_out in POWERLAW_CLASSES.items():
            table[f"{i}-{o}"] = Mix(f"{i}-{o}", powerlaw(m_in), powerlaw(m_out), m_in, m_out,
                                    POWERLAW_CAP, POWERLAW_CAP)
    return table


MIXES = _mixes()


def stream(mix: str | Mix, arrival: dict[str, Any], *, num_requests: int,
           request_class: str = "default") -> dict[str, Any]:
    """A ``synthetic`` stream of ``num_requests`` requests of ``mix`` with ``arrival`` (e.g.
    ``{"kind": "poisson", "rate": 2.0}`` or ``{"kind": "gamma", "rate": 2.0, "cv": 3}``)."""
    mix = MIXES[mix] if isinstance(mix, str) else mix
    return {"kind": "synthetic", "request_class": request_class, "arrival": dict(arrival),
            "num_requests": num_requests, **mix.lengths()}


def exact_mean(spec: dict[str, Any], cap: int | None) -> float:
    """The population mean of one distribution after the stream's clip to [1, cap]."""
    if spec["kind"] == "lognormal":
        # E[min(X, cap)] of a lognormal; rounding to integers moves it by far less than 0.5
        mu, sigma = math.log(spec["mean"]) - spec["sigma"] ** 2 / 2, spec["sigma"]
        if cap is None:
            return spec["mean"]
        z = (math.log(cap) - mu) / sigma
        phi = lambda x: 0.5 * (1 + math.erf(x / math.sqrt(2)))  # noqa: E731
        return spec["mean"] * phi(z - sigma) + cap * (1 - phi(z))
    law = PowerLawLength.model_validate(spec)
    lengths = powerlaw_lengths(law.min, law.max, law.scale)
    if cap is not None:
        lengths = np.minimum(lengths, cap)
    return float(powerlaw_weights(law.exponent, law.min, law.max) @ lengths)


def exact_std(spec: dict[str, Any], cap: int | None) -> float:
    """The population standard deviation after the clip (for the sampling tolerance)."""
    if spec["kind"] == "lognormal":  # unclipped: a clip only narrows the spread
        return spec["mean"] * math.sqrt(math.exp(spec["sigma"] ** 2) - 1)
    law = PowerLawLength.model_validate(spec)
    lengths = powerlaw_lengths(law.min, law.max, law.scale)
    if cap is not None:
        lengths = np.minimum(lengths, cap)
    weights = powerlaw_weights(law.exponent, law.min, law.max)
    mean = float(weights @ lengths)
    return math.sqrt(float(weights @ (lengths - mean) ** 2))


def sample_means(mix: str | Mix, count: int, seed: int = 0) -> tuple[float, float]:
    """Mean prompt and output length of ``count`` requests of ``mix`` drawn through chironsim's
    own workload builder (the path a scenario takes)."""
    from pathlib import Path

    from chironsim.workload.build import build_workload
    from chironsim.workload.config import WorkloadConfig

    workload = WorkloadConfig.model_validate(
        {"streams": [stream(mix, {"kind": "poisson", "rate": 1000.0}, num_requests=count)]})
    prompts, outputs = [], []
    for spec in build_workload(workload, np.random.SeedSequence(seed), Path.cwd(), None):
        prompts.append(spec.prompt_tokens)
        outputs.append(spec.output_tokens)
    return float(np.mean(prompts)), float(np.mean(outputs))
