"""Token-length distributions, drawn in fixed-size blocks so draws never depend on arrivals.

A :class:`LengthSource` hands out (prompt, output) pairs one request at a time but draws them
from its generators in blocks of ``BLOCK``: the i-th request's lengths are then a function of
the seed and the length config only — changing the arrival process of a stream does not change
which lengths its requests get.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable
from pathlib import Path

import numpy as np

from chironsim.workload.config import (
    EmpiricalLength,
    ExponentialLength,
    FixedLength,
    LognormalLength,
    PowerLawLength,
    UniformLength,
    ZipfLength,
    powerlaw_lengths,
    powerlaw_weights,
)
from chironsim.workload.readers import read_trace

BLOCK = 4096

# Lengths beyond this are certainly a mistake; it also keeps float→int conversions in range.
_LENGTH_CEILING = 2**31 - 1

LengthDistSpec = (
    FixedLength | LognormalLength | ZipfLength | PowerLawLength | UniformLength | ExponentialLength
    | EmpiricalLength
)
Draw = Callable[[int], np.ndarray]


class EmpiricalTable:
    """The (prompt, output) length columns of one trace file, as two int64 arrays."""

    def __init__(self, prompt: np.ndarray, output: np.ndarray) -> None:
        self.prompt = prompt
        self.output = output

    @classmethod
    def load(cls, spec: EmpiricalLength, path: Path) -> EmpiricalTable:
        """Stream the file once, keeping only its two length columns.

        The reader checks every count (a whole number within the token bound, so it fits the
        int64 arrays) and raises TraceFormatError for a file without rows.
        """
        prompts, outputs = array("q"), array("q")
        for row in read_trace(path, spec.format, spec.columns, need_arrival=False):
            prompts.append(row.prompt_tokens)
            outputs.append(row.output_tokens)
        return cls(np.frombuffer(prompts, dtype=np.int64), np.frombuffer(outputs, dtype=np.int64))


def _round(values: np.ndarray) -> np.ndarray:
    return np.rint(np.minimum(values, _LENGTH_CEILING)).astype(np.int64)


def _zipf_draw(spec: ZipfLength, rng: np.random.Generator) -> Draw:
    support = np.arange(spec.min, spec.max + 1, dtype=np.float64)
    cdf = np.cumsum(support ** (-spec.a))
    cdf /= cdf[-1]

    def draw(count: int) -> np.ndarray:
        index = np.searchsorted(cdf, rng.uniform(0.0, 1.0, count), side="right")
        return np.minimum(index, support.size - 1) + spec.min

    return draw


def _powerlaw_draw(spec: PowerLawLength, rng: np.random.Generator) -> Draw:
    lengths = powerlaw_lengths(spec.min, spec.max, spec.scale).astype(np.int64)
    cdf = np.cumsum(powerlaw_weights(spec.exponent, spec.min, spec.max))
    cdf /= cdf[-1]

    def draw(count: int) -> np.ndarray:
        index = np.searchsorted(cdf, rng.uniform(0.0, 1.0, count), side="right")
        return lengths[np.minimum(index, lengths.size - 1)]

    return draw


def marginal_draw(
    spec: LengthDistSpec,
    rng: np.random.Generator,
    column: str,
    table: Callable[[EmpiricalLength], EmpiricalTable],
) -> Draw:
    """A function drawing ``count`` lengths (int64, not yet clipped) from one distribution.

    ``column`` is the default column (``prompt``/``output``) for an empirical distribution.
    """
    if isinstance(spec, FixedLength):
        return lambda count: np.full(count, spec.value, dtype=np.int64)
    if isinstance(spec, LognormalLength):
        mu = spec.mu
        return lambda count: _round(rng.lognormal(mu, spec.sigma, count))
    if isinstance(spec, ZipfLength):
        return _zipf_draw(spec, rng)
    if isinstance(spec, PowerLawLength):
        return _powerlaw_draw(spec, rng)
    if isinstance(spec, UniformLength):
        return lambda count: rng.integers(spec.min, spec.max, count, endpoint=True, dtype=np.int64)
    if isinstance(spec, ExponentialLength):
        return lambda count: _round(rng.exponential(spec.mean, count))
    if isinstance(spec, EmpiricalLength):
        values: list[np.ndarray] = []  # loaded on first draw, so building stays lazy

        def draw(count: int) -> np.ndarray:
            if not values:
                loaded = table(spec)
                values.append(loaded.prompt if (spec.column or column) == "prompt" else loaded.output)
            return values[0][rng.integers(0, values[0].size, count)]

        return draw
    raise AssertionError(f"unhandled length distribution {spec!r}")


class LengthSource:
    """Hands out clipped (prompt, output) lengths, one request at a time, drawn in blocks.

    ``prompt_clipped``/``output_clipped`` count the lengths moved into [1, max].
    """

    def __init__(
        self,
        prompt: LengthDistSpec,
        output: LengthDistSpec | None,
        prompt_rng: np.random.Generator,
        output_rng: np.random.Generator,
        max_prompt: int | None,
        max_output: int | None,
        table: Callable[[EmpiricalLength], EmpiricalTable],
    ) -> None:
        if output is None:  # joint empirical: one row index feeds both lengths
            assert isinstance(prompt, EmpiricalLength) and prompt.joint

            def draw_pair(count: int) -> tuple[np.ndarray, np.ndarray]:
                loaded = table(prompt)
                rows = prompt_rng.integers(0, loaded.prompt.size, count)
                return loaded.prompt[rows], loaded.output[rows]

            self._draw_pair = draw_pair
        else:
            draw_prompt = marginal_draw(prompt, prompt_rng, "prompt", table)
            draw_output = marginal_draw(output, output_rng, "output", table)
            self._draw_pair = lambda count: (draw_prompt(count), draw_output(count))
        self._max_prompt = max_prompt if max_prompt is not None else _LENGTH_CEILING
        self._max_output = max_output if max_output is not None else _LENGTH_CEILING
        self._prompts: list[int] = []
        self._outputs: list[int] = []
        self._pending_prompt_clips: list[bool] = []
        self._pending_output_clips: list[bool] = []
        self._next = 0
        self.prompt_clipped = 0
        self.output_clipped = 0

    def _refill(self) -> None:
        prompts, outputs = self._draw_pair(BLOCK)
        clipped_prompts = np.clip(prompts, 1, self._max_prompt)
        clipped_outputs = np.clip(outputs, 1, self._max_output)
        self._pending_prompt_clips = (clipped_prompts != prompts).tolist()
        self._pending_output_clips = (clipped_outputs != outputs).tolist()
        self._prompts = clipped_prompts.tolist()
        self._outputs = clipped_outputs.tolist()
        self._next = 0

    def next_pair(self) -> tuple[int, int]:
        """The next request's (prompt_tokens, output_tokens)."""
        if self._next >= len(self._prompts):
            self._refill()
        i = self._next
        self._next += 1
        self.prompt_clipped += self._pending_prompt_clips[i]
        self.output_clipped += self._pending_output_clips[i]
        return self._prompts[i], self._outputs[i]
