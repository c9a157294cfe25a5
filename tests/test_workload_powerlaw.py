"""The ``powerlaw`` length distribution: a bounded power law given by its exponent or by its mean
(the exponent solved for it), optionally stretched by ``scale``.

Sample means are checked against the exact population mean within 4 standard errors of the
sample (σ/√n, σ from the exact distribution): a wrong exponent, a wrong support or a wrong
rounding fails, a correct sampler passes at these seeds and at almost any other (a 4σ miss
has probability about 6e-5).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from chironsim.limits import MAX_TOKENS
from chironsim.workload import WorkloadConfig, build_workload
from chironsim.workload.config import (
    PowerLawLength,
    powerlaw_exponent,
    powerlaw_lengths,
    powerlaw_mean,
    powerlaw_weights,
)

FIXED = {"kind": "fixed", "value": 10}


def draw(prompt: dict, n: int = 100_000, seed: int = 3, **stream: object) -> np.ndarray:
    spec = {"kind": "synthetic", "arrival": {"kind": "poisson", "rate": 1000.0},
            "prompt_tokens": prompt, "output_tokens": FIXED, "num_requests": n, **stream}
    config = WorkloadConfig.model_validate({"streams": [spec]})
    return np.array([r.prompt_tokens for r in build_workload(config, np.random.SeedSequence(seed),
                                                             Path("."))])


def population(law: PowerLawLength) -> tuple[float, float]:
    lengths = powerlaw_lengths(law.min, law.max, law.scale)
    weights = powerlaw_weights(law.exponent, law.min, law.max)
    mean = float(weights @ lengths)
    return mean, math.sqrt(float(weights @ (lengths - mean) ** 2))


@pytest.mark.parametrize("mean,top", [(128, 6144), (256, 6144), (512, 6144), (40.5, 100)])
def test_the_exponent_is_solved_for_the_mean(mean, top):
    law = PowerLawLength(mean=mean, max=top)
    assert powerlaw_mean(law.exponent, 1, top) == pytest.approx(mean, rel=1e-9)
    exact, sd = population(law)
    sample = draw({"kind": "powerlaw", "mean": mean, "max": top})
    assert sample.min() >= 1 and sample.max() <= top
    assert abs(sample.mean() - exact) <= 4 * sd / math.sqrt(sample.size), (sample.mean(), exact)


def test_a_larger_mean_needs_a_smaller_exponent():
    exponents = [PowerLawLength(mean=m, max=6144).exponent for m in (128, 256, 512, 1024)]
    assert exponents == sorted(exponents, reverse=True)
    assert all(e > 0 for e in exponents)


def test_a_given_exponent_draws_rank_ratios_of_the_power_law():
    sample = draw({"kind": "powerlaw", "a": 1.5, "min": 4, "max": 1000})
    assert sample.min() == 4 and sample.max() <= 1000
    ratio = (sample == 4).sum() / (sample == 5).sum()
    assert ratio == pytest.approx((5 / 4) ** 1.5, rel=0.06)


def test_scale_stretches_ranks_and_rounds_up():
    # The Llumnix benchmark's short class: ranks 1..255, a = 2, scaled to mean 128.
    scale = 128 / powerlaw_mean(2.0, 1, 255)
    spec = {"kind": "powerlaw", "a": 2.0, "min": 1, "max": 255, "scale": scale}
    law = PowerLawLength.model_validate(spec)
    exact, sd = population(law)
    assert exact == pytest.approx(128.5, abs=0.1)  # ceil adds about half a token
    sample = draw(spec)
    assert set(np.unique(sample)) <= {math.ceil(scale * k) for k in range(1, 256)}
    assert sample.min() == math.ceil(scale)
    assert abs(sample.mean() - exact) <= 4 * sd / math.sqrt(sample.size)


def test_mean_with_a_scale_solves_the_exponent_of_the_stretched_lengths():
    law = PowerLawLength(mean=300, max=100, scale=10.0)
    assert powerlaw_mean(law.exponent, 1, 100, 10.0) == pytest.approx(300, rel=1e-9)


def test_the_stream_clip_caps_the_lengths():
    sample = draw({"kind": "powerlaw", "a": 1.15, "max": 1023, "scale": 8.0},
                  max_prompt_tokens=6144)
    assert sample.max() == 6144 and (sample == 6144).any()


def test_draws_are_reproducible_by_seed():
    spec = {"kind": "powerlaw", "mean": 256, "max": 6144}
    assert (draw(spec, n=2000, seed=5) == draw(spec, n=2000, seed=5)).all()
    assert not (draw(spec, n=2000, seed=5) == draw(spec, n=2000, seed=6)).all()


@pytest.mark.parametrize("spec,message", [
    ({"max": 100}, "exactly one of a or mean"),
    ({"a": 1.0, "mean": 10, "max": 100}, "exactly one of a or mean"),
    ({"mean": 60, "max": 100}, "strictly between 1 (a → ∞) and 50.5"),
    ({"mean": 1, "max": 100}, "strictly between"),
    ({"a": 1.0, "min": 10, "max": 5}, "min must not exceed max"),
    ({"a": 1.0, "max": 1000, "scale": MAX_TOKENS}, "scale * max"),
    ({"a": 0, "max": 100}, "greater than 0"),
    ({"a": 1.0, "max": 100, "scale": 0}, "greater than 0"),
])
def test_invalid_specs_are_config_errors(spec, message):
    with pytest.raises(ValidationError, match=re.escape(message)):
        PowerLawLength.model_validate({"kind": "powerlaw", **spec})


def test_the_solver_is_monotone_and_cached():
    assert powerlaw_exponent(128.0, 1, 6144) == powerlaw_exponent(128.0, 1, 6144)
    assert powerlaw_exponent(100.0, 1, 6144) > powerlaw_exponent(128.0, 1, 6144)
