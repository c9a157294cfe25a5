"""The Llumnix Table 1 length mixes (experiments/llumnix/mixes.py) have the paper's means.

Tolerance, per mix and column, is the sum of two parts, each justified:

- the distribution's own offset from the paper's mean, at most 1 %: the power laws are the
  released benchmark's generator, whose rounding up adds about half a token and whose cap at
  6144 removes a little of the S and M tails (exact population means 127.4 / 253.9 / 512.4 for
  128 / 256 / 512); the lognormals have the paper's means exactly;
- sampling: 4 standard errors of the mean of the draws (σ/√n with σ from the exact
  distribution; the power laws are heavy-tailed, σ ≈ 390 / 750 / 1080 tokens), so a
  correct mix passes at almost any seed and a wrong exponent, scale or cap fails.
"""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("llumnix_mixes", ROOT / "experiments/llumnix/mixes.py")
mixes = sys.modules.setdefault("llumnix_mixes", importlib.util.module_from_spec(_spec))
_spec.loader.exec_module(mixes)

DRAWS = 100_000
OFFSET = 0.01


@pytest.mark.parametrize("name", sorted(mixes.MIXES))
def test_each_mix_has_the_papers_means(name):
    mix = mixes.MIXES[name]
    prompt_mean, output_mean = mixes.sample_means(mix, DRAWS, seed=7)
    for measured, spec, cap, paper in ((prompt_mean, mix.prompt, mix.max_prompt, mix.paper_prompt_mean),
                                       (output_mean, mix.output, mix.max_output, mix.paper_output_mean)):
        exact = mixes.exact_mean(spec, cap)
        assert abs(exact - paper) <= OFFSET * paper, (name, exact, paper)
        sampling = 4 * mixes.exact_std(spec, cap) / math.sqrt(DRAWS)
        assert abs(measured - paper) <= OFFSET * paper + sampling, (name, measured, paper, sampling)


def test_the_table_covers_the_papers_mixes():
    assert {"sharegpt", "burstgpt"} <= set(mixes.MIXES)
    grid = {f"{i}-{o}" for i in "SML" for o in "SML"}
    assert grid <= set(mixes.MIXES)
    assert (mixes.MIXES["sharegpt"].paper_prompt_mean, mixes.MIXES["sharegpt"].paper_output_mean) == (306, 500)
    assert (mixes.MIXES["burstgpt"].paper_prompt_mean, mixes.MIXES["burstgpt"].paper_output_mean) == (830, 271)


def test_power_law_lengths_stay_within_the_6k_cap():
    import numpy as np
    from chironsim.workload import WorkloadConfig, build_workload

    stream = mixes.stream("L-S", {"kind": "poisson", "rate": 100.0}, num_requests=20_000)
    config = WorkloadConfig.model_validate({"streams": [stream]})
    prompts = [r.prompt_tokens for r in build_workload(config, np.random.SeedSequence(0), ROOT)]
    assert max(prompts) <= mixes.POWERLAW_CAP and min(prompts) >= 1
