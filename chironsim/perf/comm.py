"""GPU-to-GPU communication time: NCCL all-reduce and point-to-point send/recv by message size.

Measured collectives do not follow one alpha-beta line: below ~1 MB they sit at a latency
floor of 10-60 us, and the achieved bandwidth then climbs over two decades of message size as
NCCL switches protocols (LL, LL128, Simple) and channel counts, reaching 55-75 % of the
NVLink rate only at tens of MB. So each (collective, GPU count, GPUs per node) is a
*piecewise alpha-beta* curve: knots at quarter decades of message size, and between two knots
``t(s) = alpha_r + s / bandwidth_r`` -- its own latency and bandwidth per size regime. The curve
is continuous and non-decreasing (a larger message never costs less, so a larger batch never
gets cheaper), constant below the first knot (the latency regime) and extended with the last
regime's bandwidth above the last knot. Curves are fitted to Vidur's measured profiles by
``chironsim calibrate`` (chironsim/perf/calibrate.py) and shipped per GPU in
catalog/calibration.yaml.

A GPU without a profile borrows the curve of its reference GPU (efficiency.reference_gpu) with
the message size scaled by the ratio of link bandwidths: every regime keeps its latency and
its fraction of the link rate. A GPU count without a profile uses the nearest profiled count
with the size scaled by the ratio of ring factors 2(n-1)/n. docs/latency-model.md gives the
measured error of both rules.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from chironsim.errors import ConfigError

ALL_REDUCE = "all_reduce"
SEND_RECV = "send_recv"
COLLECTIVES = (ALL_REDUCE, SEND_RECV)


def ring_factor(workers: int) -> float:
    """Bytes each GPU sends per byte of buffer in a ring all-reduce: 2(n-1)/n."""
    return 2.0 * (workers - 1) / workers


@dataclass(frozen=True)
class CommCurve:
    """Seconds for one message as a continuous, non-decreasing piecewise-linear function of
    its size in bytes; knots ``sizes`` (increasing), values ``seconds`` (non-decreasing)."""

    sizes: tuple[float, ...]
    seconds: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.sizes) < 2 or len(self.sizes) != len(self.seconds):
            raise ConfigError(f"a communication curve needs >= 2 knots of (size, seconds), got {len(self.sizes)} "
                              f"sizes and {len(self.seconds)} times")
        if any(b <= a for a, b in zip(self.sizes, self.sizes[1:])) or self.sizes[0] <= 0:
            raise ConfigError(f"communication curve sizes must be positive and increasing: {self.sizes}")
        if any(b < a for a, b in zip(self.seconds, self.seconds[1:])) or self.seconds[0] < 0:
            raise ConfigError(f"communication curve times must be >= 0 and non-decreasing: {self.seconds}")
        slopes = [(t1 - t0) / (s1 - s0) for s0, s1, t0, t1 in
                  zip(self.sizes, self.sizes[1:], self.seconds, self.seconds[1:])]
        object.__setattr__(self, "_slopes", tuple(slopes))
        object.__setattr__(self, "_inner", list(self.sizes[1:-1]))

    def time(self, size):
        """Seconds for a message of ``size`` bytes (scalar or numpy array; 0 bytes costs 0)."""
        if isinstance(size, (int, float)) and not isinstance(size, bool):
            if size <= 0:
                return 0.0
            if size <= self.sizes[0]:
                return self.seconds[0]
            k = bisect.bisect_right(self._inner, size)
            return self.seconds[k] + self._slopes[k] * (size - self.sizes[k])
        values = np.asarray(size, dtype=float)
        k = np.searchsorted(np.asarray(self._inner), values, side="right")
        knots, times, slopes = np.asarray(self.sizes), np.asarray(self.seconds), np.asarray(self._slopes)
        inside = times[k] + slopes[k] * (values - knots[k])
        result = np.where(values <= 0, 0.0, np.where(values <= self.sizes[0], self.seconds[0], inside))
        return float(result) if result.ndim == 0 else result

    def scaled(self, factor: float) -> "CommCurve":
        """The curve of a link ``factor`` times faster: t'(s) = t(s / factor)."""
        return CommCurve(tuple(s * factor for s in self.sizes), self.seconds)

    def regimes(self) -> list[tuple[float, float, float, float]]:
        """(from bytes, to bytes, alpha seconds, bandwidth bytes/s) of each size regime."""
        rows = []
        for s0, s1, t0, slope in zip(self.sizes, self.sizes[1:], self.seconds, self._slopes):
            rows.append((s0, s1, t0 - slope * s0, 1.0 / slope if slope > 0 else float("inf")))
        return rows

    def to_mapping(self) -> dict[str, list[float]]:
        return {"sizes": [float(s) for s in self.sizes], "seconds": [float(f"{t:.6g}") for t in self.seconds]}


@dataclass(frozen=True)
class CommModel:
    """Communication curves of one GPU type, keyed by (collective, workers, devices_per_node).

    ``link_bytes_per_s`` is the link rate of the GPU the curves were measured on; ``for_link``
    re-targets them to another GPU's link.
    """

    gpu: str
    link_bytes_per_s: float
    curves: Mapping[tuple[str, int, int], CommCurve]

    def _curve(self, collective: str, workers: int, devices_per_node: int) -> tuple[CommCurve, float]:
        exact = self.curves.get((collective, workers, devices_per_node))
        if exact is not None:
            return exact, 1.0
        same_layout = [(w, d) for (c, w, d) in self.curves if c == collective
                       and (d == w) == (devices_per_node == workers)]
        if not same_layout:
            raise ConfigError(f"no {collective} profile for {self.gpu} to price {workers} GPUs "
                              f"({devices_per_node} per node) from")
        # nearest profiled GPU count (log distance; ties go to the larger count)
        w, d = min(same_layout, key=lambda wd: (abs(np.log(wd[0] / workers)), -wd[0]))
        # the same bytes per GPU on the wire: s x ring(workers) = s' x ring(w)
        factor = ring_factor(workers) / ring_factor(w) if collective == ALL_REDUCE and workers > 1 else 1.0
        return self.curves[(collective, w, d)], factor

    def all_reduce(self, size, workers: int, devices_per_node: int | None = None):
        """Seconds to all-reduce a buffer of ``size`` bytes over ``workers`` GPUs (one node
        unless ``devices_per_node`` says fewer GPUs per node). One GPU costs 0."""
        if workers <= 1:
            return 0.0 if np.ndim(size) == 0 else np.zeros(np.shape(size))
        curve, factor = self._curve(ALL_REDUCE, workers, devices_per_node or workers)
        return curve.time(size if factor == 1.0 else size * factor)

    def send_recv(self, size, same_node: bool = True):
        """Seconds to send ``size`` bytes from one GPU to another (same node over NVLink, or
        across nodes): a pipeline hop's activations, or a KV copy between GPUs."""
        curve, _ = self._curve(SEND_RECV, 2, 2 if same_node else 1)
        return curve.time(size)

    def for_link(self, gpu: str, link_bytes_per_s: float) -> "CommModel":
        """These curves re-targeted to a GPU with another link rate (sizes scale by the ratio)."""
        factor = link_bytes_per_s / self.link_bytes_per_s
        return CommModel(gpu, link_bytes_per_s, {k: c.scaled(factor) for k, c in self.curves.items()})

    def to_mapping(self) -> dict[str, list[dict]]:
        out: dict[str, list[dict]] = {c: [] for c in COLLECTIVES}
        for (collective, workers, per_node), curve in sorted(self.curves.items()):
            out[collective].append({"workers": workers, "devices_per_node": per_node, **curve.to_mapping()})
        return {k: v for k, v in out.items() if v}

    @classmethod
    def from_mapping(cls, gpu: str, link_bytes_per_s: float, values: Mapping[str, Sequence[Mapping]],
                     where: str = "comm") -> "CommModel":
        curves: dict[tuple[str, int, int], CommCurve] = {}
        if not isinstance(values, Mapping):
            raise ConfigError(f"{where}: expected a mapping of collective -> curves")
        for collective, entries in values.items():
            if collective not in COLLECTIVES:
                raise ConfigError(f"{where}: unknown collective {collective!r}; expected one of {list(COLLECTIVES)}")
            for i, entry in enumerate(entries):
                try:
                    key = (collective, int(entry["workers"]), int(entry["devices_per_node"]))
                    curves[key] = CommCurve(tuple(float(s) for s in entry["sizes"]),
                                            tuple(float(t) for t in entry["seconds"]))
                except (KeyError, TypeError, ValueError) as exc:
                    raise ConfigError(f"{where}.{collective}[{i}]: {exc}") from exc
                except ConfigError as exc:
                    raise ConfigError(f"{where}.{collective}[{i}]: {exc}") from exc
        return cls(gpu, link_bytes_per_s, curves)
