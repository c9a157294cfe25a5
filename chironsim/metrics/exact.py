"""Exact statistics of a float column read in chunks: numpy's mean and percentiles, bit for bit.

A week of requests is too many to hold one float column per class and metric in memory at the
end of a run, but the summary's means and percentiles were exact (numpy's ``mean`` and linear
``percentile`` over the whole column) and must stay so. Both are reproduced here from passes
over the column in order, holding a bounded amount at a time:

- :class:`PairwiseSum`: numpy sums a contiguous float64 array pairwise (split in two halves,
  rounded down to a multiple of 8, until at most 128 values remain, summed with 8 running
  accumulators). The split depends on the length only, so once the count is known (a first
  pass) the same tree is walked over the chunks: every subtree of at most ``leaf`` values is
  summed by numpy itself, and the subtrees are added as numpy adds them.
- :class:`OrderStatistics`: the values at given ranks by radix selection on the values' bit
  patterns (mapped to unsigned keys that sort as the floats do): a pass histograms 16 more
  bits of the keys within the bucket holding each rank, until a bucket is small enough to
  keep and sort (or all 64 bits are fixed).
- :func:`percentile`: numpy's own index and interpolation code (``_get_indexes``,
  ``_get_gamma``, ``_lerp`` of this numpy) applied to those order statistics, so that the
  float rounding is numpy's.

NaNs are the caller's to drop, as the summary drops them before numpy sees the values.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np
from numpy.lib import _function_base_impl as _npq

#: numpy's pairwise-summation block (``PW_BLOCKSIZE``) and unroll factor.
_PW_BLOCK = 128
_UNROLL = 8
#: Largest subtree summed by one numpy call (8 bytes a value held at a time).
LEAF = 1 << 16
#: A bucket of at most this many values is kept and sorted rather than split further.
COLLECT = 1 << 16
_BITS = 16
_SIGN = np.uint64(1 << 63)


def float_keys(values: np.ndarray) -> np.ndarray:
    """Unsigned keys ordered as the (non-NaN) float64 values are."""
    bits = np.ascontiguousarray(values, dtype=np.float64).view(np.uint64)
    return np.where(bits & _SIGN, ~bits, bits | _SIGN)


def key_floats(keys: np.ndarray) -> np.ndarray:
    """Inverse of :func:`float_keys`."""
    keys = np.asarray(keys, dtype=np.uint64)
    return np.where(keys & _SIGN, keys & ~_SIGN, ~keys).view(np.float64)


class PairwiseSum:
    """``np.add.reduce`` of ``n`` float64 values fed in order, in chunks (see module doc)."""

    def __init__(self, n: int, leaf: int = LEAF) -> None:
        if leaf < _PW_BLOCK:
            raise ValueError("leaf must be at least numpy's pairwise block")
        self.n = n
        self._sizes: list[int] = []
        self._tree = self._split(n, leaf) if n else None
        self._sums: list[float] = []
        self._pending: list[np.ndarray] = []
        self._pending_n = 0

    def _split(self, m: int, leaf: int) -> object:
        if m <= leaf:
            self._sizes.append(m)
            return len(self._sizes) - 1
        half = m // 2
        half -= half % _UNROLL
        return (self._split(half, leaf), self._split(m - half, leaf))

    def feed(self, values: np.ndarray) -> None:
        if not len(values):
            return
        self._pending.append(values)
        self._pending_n += len(values)
        while len(self._sums) < len(self._sizes) and self._pending_n >= self._sizes[len(self._sums)]:
            size = self._sizes[len(self._sums)]
            data = np.concatenate(self._pending) if len(self._pending) > 1 else self._pending[0]
            leaf = np.ascontiguousarray(data[:size], dtype=np.float64)
            self._sums.append(np.add.reduce(leaf))
            rest = data[size:]
            self._pending = [rest] if len(rest) else []
            self._pending_n = len(rest)

    def total(self) -> np.float64:
        """The sum numpy gives for the whole array (0.0 for none)."""
        if self._pending_n or len(self._sums) != len(self._sizes):
            raise ValueError(f"PairwiseSum: fed {sum(self._sizes[:len(self._sums)]) + self._pending_n}"
                             f" values, expected {self.n}")
        if self._tree is None:
            return np.float64(0.0)

        def add(node: object) -> np.float64:
            if isinstance(node, int):
                return self._sums[node]
            left, right = node  # type: ignore[misc]
            return add(left) + add(right)

        return np.float64(0.0) + add(self._tree)

    def mean(self) -> float:
        """``float(values.mean())`` as numpy computes it."""
        total = self.total()
        return float(total.dtype.type(total / self.n))


class OrderStatistics:
    """Values at ``ranks`` (0-based, in sorted order) of a float column read in passes.

    Call :meth:`feed` with every chunk of the column (in any order) once per pass, then
    :meth:`end_pass`; repeat while it returns False. The first pass also counts the values,
    so ``ranks`` may be given as a function of the count.
    """

    def __init__(self, ranks: Callable[[int], Iterable[int]] | Iterable[int]) -> None:
        self._rank_fn = ranks if callable(ranks) else (lambda n, r=tuple(ranks): r)
        self.n = 0
        self._first = True
        self._hist = np.zeros(1 << _BITS, dtype=np.int64)
        # rank -> [prefix, bits fixed, rank within the bucket, bucket count]
        self._targets: dict[int, list[int]] = {}
        self._groups: dict[tuple[int, int], object] = {}
        self.values: dict[int, float] = {}

    def feed(self, values: np.ndarray) -> None:
        if not len(values):
            return
        keys = float_keys(values)
        if self._first:
            self.n += len(keys)
            self._hist += np.bincount((keys >> np.uint64(64 - _BITS)).astype(np.intp),
                                      minlength=1 << _BITS)
            return
        for (prefix, bits), acc in self._groups.items():
            sel = keys[(keys >> np.uint64(64 - bits)) == np.uint64(prefix)] if bits else keys
            if not len(sel):
                continue
            if isinstance(acc, list):
                acc.append(sel)
            else:
                shift = np.uint64(64 - bits - _BITS)
                acc += np.bincount(((sel >> shift) & np.uint64((1 << _BITS) - 1)).astype(np.intp),
                                   minlength=1 << _BITS)

    def end_pass(self) -> bool:
        """Finish a pass; True when every rank's value is known."""
        if self._first:
            self._first = False
            for rank in self._rank_fn(self.n):
                if not 0 <= rank < self.n:
                    raise ValueError(f"rank {rank} outside 0..{self.n - 1}")
                self._targets[int(rank)] = [0, 0, int(rank), self.n]
            self._refine({(0, 0): self._hist})
        else:
            self._refine(self._groups)
        return not self._targets

    def _refine(self, results: dict[tuple[int, int], object]) -> None:
        for rank, target in list(self._targets.items()):
            prefix, bits, within, _count = target
            acc = results[(prefix, bits)]
            if isinstance(acc, list):
                keys = np.sort(np.concatenate(acc)) if acc else np.empty(0, np.uint64)
                self.values[rank] = float(key_floats(keys[within:within + 1])[0])
                del self._targets[rank]
                continue
            hist = acc  # counts of the next 16 bits inside (prefix, bits)
            cum = np.cumsum(hist)
            bucket = int(np.searchsorted(cum, within, side="right"))
            before = int(cum[bucket - 1]) if bucket else 0
            target[0] = (prefix << _BITS) | bucket
            target[1] = bits + _BITS
            target[2] = within - before
            target[3] = int(hist[bucket])
            if target[1] == 64:  # every bit fixed: the key is the value
                self.values[rank] = float(key_floats(np.array([target[0]], np.uint64))[0])
                del self._targets[rank]
        self._groups = {}
        for prefix, bits, _within, count in self._targets.values():
            if (prefix, bits) not in self._groups:
                self._groups[(prefix, bits)] = ([] if count <= COLLECT
                                                else np.zeros(1 << _BITS, dtype=np.int64))


def percentile_ranks(n: int, q: float | Sequence[float]) -> list[int]:
    """The 0-based ranks ``np.percentile(values, q)`` reads for ``n`` values (n > 0)."""
    prev, nxt = _indexes(n, q)[1:3]
    return sorted({int(i) % n for i in np.concatenate([prev.ravel(), nxt.ravel()])})


def _indexes(n: int, q: float | Sequence[float]):
    quantiles = np.true_divide(q, 100, out=...)
    virtual = np.asanyarray(_npq._QuantileMethods["linear"]["get_virtual_index"](n, quantiles))
    prev, nxt = _npq._get_indexes(np.empty(0, dtype=np.float64), virtual, n)
    return virtual, prev, nxt


def percentile(n: int, q: float | Sequence[float], value_at: Callable[[int], float]):
    """``np.percentile(values, q)`` of ``n`` values (linear method), from the order
    statistics ``value_at(rank)``; returns what numpy returns (a float64 scalar or array)."""
    weak_q = type(q) in (int, float)
    virtual, prev, nxt = _indexes(n, q)

    def gather(idx: np.ndarray) -> np.ndarray:
        return np.array([value_at(int(i) % n) for i in idx.ravel()],
                        dtype=np.float64).reshape(idx.shape)

    gamma = _npq._get_gamma(virtual, prev, _npq._QuantileMethods["linear"])
    gamma = float(gamma) if weak_q else gamma.reshape(virtual.shape)
    return _npq._lerp(gather(prev), gather(nxt), gamma)
