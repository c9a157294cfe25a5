"""Efficiency factors that turn datasheet peaks into achieved speeds.

A roofline with datasheet peaks undershoots every measurement: kernels reach 70-80 % of peak
FLOP/s or HBM bandwidth, small kernels pay a minimum duration, compute and memory traffic
overlap imperfectly, and an engine iteration pays scheduler and launch costs. These numbers
carry that gap. They are fitted by `chironsim calibrate` (chironsim/perf/calibrate.py) and the
shipped defaults live in catalog/calibration.yaml together with the command that produced them.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

import yaml

from chironsim.errors import ConfigError

_FRACTIONS = ("gemm_compute", "gemm_memory", "elementwise_memory", "link")
_UNIT_INTERVAL = ("overlap",)
_DURATIONS = ("kernel_floor_s", "elementwise_floor_s", "allreduce_latency_s", "iteration_overhead_s")


@dataclass(frozen=True, slots=True)
class Efficiency:
    """Achieved fractions of peak and fixed costs (seconds) used by the roofline model.

    gemm_compute / gemm_memory: fraction of peak BF16 FLOP/s and HBM bandwidth that matrix
    multiplies reach (also used for attention, for which no profile was available).
    overlap: fraction of the smaller of (compute time, memory time) that is *not* hidden
    behind the larger one; 0 is the textbook max(), 1 is their sum.
    kernel_floor_s: minimum GPU time of one GEMM or attention kernel.
    elementwise_memory / elementwise_floor_s: HBM bandwidth fraction and minimum kernel time of
    the memory-bound element-wise kernels (norms, RoPE, activation, residual add).
    link / allreduce_latency_s: all-reduce bus-bandwidth fraction and per-call latency.
    iteration_overhead_s: fixed cost per engine iteration (scheduling, launch, sampling).
    """

    gemm_compute: float
    gemm_memory: float
    overlap: float
    kernel_floor_s: float
    elementwise_memory: float
    elementwise_floor_s: float
    link: float
    allreduce_latency_s: float
    iteration_overhead_s: float

    def __post_init__(self) -> None:
        for name in _FRACTIONS:
            value = getattr(self, name)
            if not 0.0 < value <= 1.0:
                raise ConfigError(f"efficiency.{name} must be in (0, 1], got {value}")
        for name in _UNIT_INTERVAL:
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"efficiency.{name} must be in [0, 1], got {value}")
        for name in _DURATIONS:
            value = getattr(self, name)
            if not value >= 0.0:
                raise ConfigError(f"efficiency.{name} must be >= 0 seconds, got {value}")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], where: str = "efficiency") -> Efficiency:
        """Build from a mapping (YAML/config), naming `where` in any error."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        missing = sorted(names - set(values))
        if unknown or missing:
            raise ConfigError(f"{where}: unknown keys {unknown}, missing keys {missing}")
        try:
            return cls(**{k: float(values[k]) for k in names})
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{where}: {exc}") from exc
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from exc

    @classmethod
    def from_yaml(cls, path: str | Path) -> Efficiency:
        """Read the `efficiency:` block of a calibration file written by `calibrate_command`."""
        try:
            document = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"{path}: cannot read calibration file: {exc}") from exc
        if not isinstance(document, dict) or not isinstance(document.get("efficiency"), dict):
            raise ConfigError(f"{path}: expected a mapping with an 'efficiency' block")
        return cls.from_mapping(document["efficiency"], where=f"{path}: efficiency")

    @classmethod
    def default(cls) -> Efficiency:
        """The calibrated defaults shipped in chironsim/catalog/calibration.yaml."""
        return _shipped_default()

    def to_mapping(self) -> dict[str, float]:
        return dataclasses.asdict(self)

    def replace(self, **changes: float) -> Efficiency:
        return dataclasses.replace(self, **changes)


@functools.cache
def _shipped_default() -> Efficiency:
    text = resources.files("chironsim.catalog").joinpath("calibration.yaml").read_text("utf-8")
    document = yaml.safe_load(text)
    return Efficiency.from_mapping(document["efficiency"], where="catalog/calibration.yaml")
