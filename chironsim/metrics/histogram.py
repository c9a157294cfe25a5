"""Per-token inter-token latency without storing every token: an exact log-bucket histogram.

A request of ``n`` tokens has ``n − 1`` inter-token gaps; an hour of a busy cluster has tens of
millions. :class:`LogHistogram` keeps one integer count per *bucket* of a fixed geometric grid
(DDSketch's logarithmic mapping, Masson et al., VLDB 2019, with fixed boundaries):

* boundaries ``b[i] = LOW · γ^i`` for ``i = 0 … N``, ``γ = (1 + α) / (1 − α)``; bucket ``i``
  holds the values in ``(b[i−1], b[i]]`` (bucket 0 everything ``≤ LOW``, the last everything
  above ``b[N−1]``, both far outside any simulated gap: 1 ns and ~10^9 s; they report the
  exact minimum and maximum seen, and the bound below is for values in ``(LOW, HIGH]``);
* a value's bucket is found by *comparison* with the precomputed boundaries (``bisect`` for one
  value, ``numpy.searchsorted`` for a stretch of iterations), never by a floating-point log, so
  the one-at-a-time and the vectorised paths put a value in the same bucket bit for bit and
  fast-forward on/off give identical histograms;
* bucket ``i`` reports ``2·b[i]/(γ + 1)``, clamped to the exact minimum and maximum seen.

**Error bound.** For every ``x`` in ``(b[i]/γ, b[i]]`` the reported value ``r`` satisfies
``|r − x| ≤ α·x`` (equality at the bucket's ends; ``(γ − 1)/(γ + 1) = α``), up to float
rounding of the boundaries (~1e-15 relative). So :meth:`LogHistogram.quantile` ``q`` is within
relative error ``α`` of the exact order statistic of rank ``⌊q·(n − 1)⌋`` (0-based) — numpy's
``percentile(..., method="lower")`` — for any data, any ``n``. The default ``α`` is 1 %.

**Mergeable.** Histograms with the same ``α`` share the grid, so merging (two instances, two
classes, two sweep points) adds counts and is exact: the merge of histograms is the histogram
of the union. Counts are integers (weights may be any integer, also negative to correct a
count recorded in bulk), so the order of additions never changes the result.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterable, Mapping

import numpy as np

#: Default relative accuracy of a reported quantile.
DEFAULT_ALPHA = 0.01
#: Lower end of the grid (s): a gap at or below it is reported as the exact minimum.
LOW = 1e-9
#: Upper end of the grid (s); larger than a year of simulated time (chironsim.limits).
HIGH = 1e9


class _Grid:
    """The shared boundaries for one ``α`` (a list for ``bisect``, an array for numpy)."""

    __slots__ = ("alpha", "gamma", "bounds", "bounds_array", "values")

    def __init__(self, alpha: float) -> None:
        if not 0 < alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
        self.alpha = alpha
        self.gamma = (1 + alpha) / (1 - alpha)
        n = math.ceil(math.log(HIGH / LOW) / math.log(self.gamma)) + 1
        self.bounds_array = LOW * self.gamma ** np.arange(n, dtype=float)
        self.bounds = self.bounds_array.tolist()
        #: The value each bucket reports; the two open-ended ones report (after the clamp in
        #: LogHistogram.quantile) the exact minimum and maximum seen.
        self.values = (2.0 * self.bounds_array / (self.gamma + 1.0)).tolist() + [math.inf]
        self.values[0] = 0.0

    def bucket_counts(self, values: np.ndarray) -> tuple[list[int], list[int], float, float]:
        """The buckets of ``values`` (non-empty) with how many fall in each, and their range."""
        keys, times = np.unique(np.searchsorted(self.bounds_array, values, side="left"),
                                return_counts=True)
        return keys.tolist(), times.tolist(), float(values.min()), float(values.max())


_GRIDS: dict[float, _Grid] = {}


def grid(alpha: float = DEFAULT_ALPHA) -> _Grid:
    g = _GRIDS.get(alpha)
    if g is None:
        g = _GRIDS[alpha] = _Grid(alpha)
    return g


class LogHistogram:
    """Counts of values on a fixed log grid of relative accuracy ``alpha`` (module docstring)."""

    __slots__ = ("grid", "counts", "minimum", "maximum")

    def __init__(self, alpha: float = DEFAULT_ALPHA) -> None:
        self.grid = grid(alpha)
        self.counts: list[int] = [0] * (len(self.grid.bounds) + 1)
        self.minimum = math.inf
        self.maximum = -math.inf

    @property
    def alpha(self) -> float:
        return self.grid.alpha

    @property
    def count(self) -> int:
        return sum(self.counts)

    def key(self, value: float) -> int:
        """The bucket of ``value``."""
        return bisect_left(self.grid.bounds, value)

    def add(self, value: float, weight: int = 1) -> None:
        """Count ``value`` ``weight`` times (a negative weight takes counts back, and does not
        narrow the minimum and maximum)."""
        self.counts[bisect_left(self.grid.bounds, value)] += weight
        if weight > 0:
            if value < self.minimum:
                self.minimum = value
            if value > self.maximum:
                self.maximum = value

    def add_array(self, values: np.ndarray, weight: int = 1) -> None:
        """Count each of ``values`` ``weight`` times; the same buckets as :meth:`add` one by one."""
        if len(values):
            self.add_buckets(self.grid.bucket_counts(values), weight)

    def add_buckets(self, buckets: tuple[list[int], list[int], float, float], weight: int) -> None:
        """Add :meth:`_Grid.bucket_counts` of some values, ``weight`` times each."""
        keys, times, lo, hi = buckets
        counts = self.counts
        for k, t in zip(keys, times):
            counts[k] += t * weight
        if weight > 0:
            if lo < self.minimum:
                self.minimum = lo
            if hi > self.maximum:
                self.maximum = hi

    def merge(self, other: LogHistogram) -> None:
        """Add ``other``'s counts (same ``alpha``) into this histogram."""
        if other.grid is not self.grid:
            raise ValueError(f"cannot merge histograms of alpha {self.alpha} and {other.alpha}")
        self.counts = [a + b for a, b in zip(self.counts, other.counts)]
        self.minimum = min(self.minimum, other.minimum)
        self.maximum = max(self.maximum, other.maximum)

    def quantile(self, q: float) -> float:
        """Within relative error ``alpha`` of the order statistic of 0-based rank
        ``⌊q·(n − 1)⌋`` (numpy's ``method="lower"``); NaN when empty."""
        if not 0 <= q <= 1:
            raise ValueError(f"q must be in [0, 1], got {q!r}")
        n = self.count
        if n <= 0:
            return math.nan
        rank = math.floor(q * (n - 1))
        seen = 0
        for k, c in enumerate(self.counts):
            seen += c
            if seen > rank:
                value = self.grid.values[k]
                return min(max(value, self.minimum), self.maximum)
        return self.maximum  # unreachable with non-negative counts

    def to_dict(self) -> dict[str, object]:
        """A JSON-able form: ``alpha``, ``min``, ``max`` and the non-zero ``{bucket: count}``."""
        return {"alpha": self.alpha, "min": self.minimum, "max": self.maximum,
                "counts": {str(k): c for k, c in enumerate(self.counts) if c}}

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> LogHistogram:
        hist = cls(float(data["alpha"]))  # type: ignore[arg-type]
        hist.minimum = float(data["min"])  # type: ignore[arg-type]
        hist.maximum = float(data["max"])  # type: ignore[arg-type]
        for k, c in dict(data["counts"]).items():  # type: ignore[call-overload]
            hist.counts[int(k)] += int(c)
        return hist


def merged(histograms: Iterable[LogHistogram], alpha: float = DEFAULT_ALPHA) -> LogHistogram:
    """One histogram of every value counted in ``histograms``."""
    out = LogHistogram(alpha)
    for h in histograms:
        out.merge(h)
    return out


class ItlRecorder:
    """Inter-token gaps of every request, one :class:`LogHistogram` per request class.

    The engine reports gaps in bulk: an iteration (or a fast-forwarded stretch of them) gives
    every decoding request of a class one gap per iteration equal to the iteration's duration.
    :meth:`push` only queues ``(classes, durations, k)`` — no per-request and, on the hot
    path, no per-iteration work; every :data:`FLUSH_AFTER` pushes (and whenever
    :attr:`by_class` is read) the queue is bucketed at once: one ``searchsorted`` over all
    queued durations, one weighted ``bincount`` per class. Gaps that are not an iteration's
    duration (the first token after a swap-in, a migration or an exchange, or after a
    recompute's prefill) are reported one by one with :meth:`gap`. Counts are integers, so
    when and in which order gaps are bucketed never changes the histograms.
    """

    #: Queued pushes before they are bucketed (memory: at most this many duration arrays).
    FLUSH_AFTER = 1024

    __slots__ = ("alpha", "_hists", "pending")

    def __init__(self, alpha: float = DEFAULT_ALPHA) -> None:
        self.alpha = alpha
        self._hists: dict[str, LogHistogram] = {}
        #: Queued ``(classes, durations, k)``: the first ``k`` of ``durations`` each gave
        #: ``n`` requests of every ``(class, n)`` in ``classes`` a gap of that duration.
        self.pending: list[tuple[tuple[tuple[str, int], ...], np.ndarray, int]] = []

    @property
    def by_class(self) -> dict[str, LogHistogram]:
        """The histograms, every queued gap included."""
        if self.pending:
            self.flush()
        return self._hists

    def histogram(self, request_class: str) -> LogHistogram:
        h = self._hists.get(request_class)
        if h is None:
            h = self._hists[request_class] = LogHistogram(self.alpha)
        return h

    def push(self, classes: tuple[tuple[str, int], ...], durations: np.ndarray, k: int) -> None:
        """``k`` consecutive iterations (the first ``k`` of ``durations``) with the same
        decoding requests, ``n`` of each ``(class, n)`` in ``classes``."""
        pending = self.pending
        pending.append((classes, durations, k))
        if len(pending) >= self.FLUSH_AFTER:
            self.flush()

    def flush(self) -> None:
        pending, self.pending = self.pending, []
        if not pending:
            return
        g = grid(self.alpha)
        values = np.concatenate([d[:k] for _, d, k in pending])
        lengths = [k for _, _, k in pending]
        keys, spans = self._bucket(g.bounds_array, values, lengths)
        rows: dict[str, list[int]] = {}  # class -> requests per push
        for i, (classes, _, _) in enumerate(pending):
            for cls, n in classes:
                row = rows.get(cls)
                if row is None:
                    row = rows[cls] = [0] * len(pending)
                row[i] = n
        for cls, row in rows.items():
            per_push = np.array(row, dtype=np.int64)
            if spans is None:
                weights = np.repeat(per_push, lengths)
            else:
                whole, whole_lengths, split, split_lengths = spans
                weights = np.concatenate((per_push[whole] * whole_lengths,
                                          np.repeat(per_push[split], split_lengths)))
            counted = np.bincount(keys, weights=weights, minlength=len(g.bounds) + 1)
            hist = self.histogram(cls)
            counts = hist.counts
            for k in np.flatnonzero(counted).tolist():
                counts[k] += int(round(counted[k]))
            seen = values if per_push.all() else values[np.repeat(per_push, lengths) > 0]
            if len(seen):
                hist.minimum = min(hist.minimum, float(seen.min()))
                hist.maximum = max(hist.maximum, float(seen.max()))

    @staticmethod
    def _bucket(bounds: np.ndarray, values: np.ndarray, lengths: list[int]):
        """The buckets of the queued gaps, as ``(keys, spans)``: with ``spans`` None, ``keys``
        is every gap's bucket in order; otherwise ``spans = (whole, whole_lengths, split,
        split_lengths)`` and ``keys`` holds one bucket for each push of ``whole`` (all its gaps fall in it),
        then the bucket of each gap of the pushes of ``split``, in order.

        A push's gaps are a stretch's iteration durations, which grow with the contexts: when
        they never decrease and the first and last gap share a bucket, so do all of them
        (bucket boundaries are sorted), and the push is counted once with its length instead
        of per gap. Checked on the gaps themselves (a NaN or a decrease anywhere: every gap
        bucketed on its own), so the counts are those of bucketing each gap, always."""
        if len(lengths) < 2 or min(lengths) == 0:
            return bounds.searchsorted(values, side="left"), None
        stops = np.cumsum(lengths)
        steps = np.diff(values)
        steps[stops[:-1] - 1] = 0.0  # from one push to the next
        if not (steps >= 0).all():
            return bounds.searchsorted(values, side="left"), None
        sizes = np.array(lengths)
        first = bounds.searchsorted(values[stops - sizes], side="left")
        last = bounds.searchsorted(values[stops - 1], side="left")
        same = first == last
        whole = np.flatnonzero(same)
        split = np.flatnonzero(~same)
        split_lengths = sizes[split]
        rest = values[np.repeat(~same, sizes)]
        keys = np.concatenate((first[whole], bounds.searchsorted(rest, side="left")))
        return keys, (whole, sizes[whole], split, split_lengths)

    def gap(self, request_class: str, gap: float, weight: int = 1) -> None:
        """One gap (``weight`` of them; -1 takes back one an iteration was credited with)."""
        self.histogram(request_class).add(gap, weight)
