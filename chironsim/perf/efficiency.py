"""Efficiency factors that turn datasheet peaks into achieved speeds, per GPU.

A roofline with datasheet peaks undershoots every measurement: kernels reach 70-90 % of peak
FLOP/s or HBM bandwidth, small kernels pay a minimum duration, compute and memory traffic
overlap imperfectly, and an engine iteration pays scheduler and launch costs. These numbers
carry that gap. They are fitted by `chironsim calibrate` (chironsim/perf/calibrate.py), one set
per profiled GPU; the shipped sets live in catalog/calibration.yaml together with the command
that produced them, and communication curves beside them (chironsim/perf/comm.py).

Transfer rule for a GPU without profiles (docs/latency-model.md gives its measured error): use
the factors and communication curves of the *reference GPU*, the calibrated GPU nearest in
log(peak BF16 FLOP/s) and log(HBM bandwidth); communication curves are re-targeted to the
GPU's own link rate.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

import yaml

from chironsim.catalog.specs import GPU
from chironsim.errors import ConfigError

#: Element-wise kernel kinds, priced separately: both RMSNorms (input and post-attention),
#: rotary embedding, SiLU-and-mul activation, residual add.
ELEMENTWISE_KINDS = ("norm", "rope", "act", "add")
_FRACTIONS = ("gemm_compute", "gemm_memory") + tuple(f"{k}_memory" for k in ELEMENTWISE_KINDS)
_UNIT_INTERVAL = ("overlap",)
_DURATIONS = ("kernel_floor_s",) + tuple(f"{k}_floor_s" for k in ELEMENTWISE_KINDS) + ("iteration_overhead_s",)
_ROWS = tuple(f"{k}_rows" for k in ELEMENTWISE_KINDS)


@dataclass(frozen=True, slots=True)
class Efficiency:
    """Achieved fractions of peak and fixed costs (seconds) used by the roofline model.

    gemm_compute / gemm_memory: fraction of peak BF16 FLOP/s and HBM bandwidth that matrix
    multiplies reach (also used for attention, for which no profile was available).
    overlap: fraction of the smaller of (compute time, memory time) that is *not* hidden
    behind the larger one; 0 is the textbook max(), 1 is their sum.
    kernel_floor_s: minimum GPU time of one GEMM or attention kernel.
    <kind>_memory / <kind>_floor_s / <kind>_rows for kind in norm, rope, act, add: HBM bandwidth
    fraction, minimum kernel time, and the fewest tokens (rows) the kernel is priced at, of each
    memory-bound element-wise kernel kind. The norms, RoPE and the activation give each token's
    row to one thread block, so below about one row per SM most SMs idle and the kernel takes
    as long as `rows` tokens would (fitted: 86-176 rows on GPUs with 108-132 SMs).
    iteration_overhead_s: fixed cost per engine iteration (scheduling, launch, sampling).
    """

    gemm_compute: float
    gemm_memory: float
    overlap: float
    kernel_floor_s: float
    norm_memory: float
    norm_floor_s: float
    rope_memory: float
    rope_floor_s: float
    act_memory: float
    act_floor_s: float
    add_memory: float
    add_floor_s: float
    norm_rows: float
    rope_rows: float
    act_rows: float
    add_rows: float
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
        for name in _ROWS:
            value = getattr(self, name)
            if not 1.0 <= value < 1e6:
                raise ConfigError(f"efficiency.{name} must be in [1, 1e6) tokens, got {value}")

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
    def from_yaml(cls, path: str | Path, gpu: str | None = None) -> Efficiency:
        """Read one GPU's `efficiency:` block from a calibration file written by
        `calibrate_command` (the only GPU in it when `gpu` is None)."""
        try:
            document = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"{path}: cannot read calibration file: {exc}") from exc
        gpus = document.get("gpus") if isinstance(document, dict) else None
        if not isinstance(gpus, dict) or not gpus:
            raise ConfigError(f"{path}: expected a mapping with a 'gpus' block")
        if gpu is None and len(gpus) != 1:
            raise ConfigError(f"{path}: holds {sorted(gpus)}; say which GPU")
        name = gpu if gpu is not None else next(iter(gpus))
        if name not in gpus or not isinstance(gpus[name], dict):
            raise ConfigError(f"{path}: no calibration for {name!r}; it has {sorted(gpus)}")
        return cls.from_mapping(gpus[name].get("efficiency", {}), where=f"{path}: gpus.{name}.efficiency")

    @classmethod
    def default(cls) -> Efficiency:
        """The factors of the calibration's default GPU (A100-80GB, the most profiled one)."""
        shipped = shipped_calibration()
        return shipped.efficiency[shipped.default_gpu]

    @classmethod
    def for_gpu(cls, gpu: GPU) -> Efficiency:
        """This GPU's own calibrated factors, or its reference GPU's (the transfer rule)."""
        shipped = shipped_calibration()
        return shipped.efficiency[reference_gpu(gpu, tuple(shipped.specs.values()))]

    def to_mapping(self) -> dict[str, float]:
        return dataclasses.asdict(self)

    def replace(self, **changes: float) -> Efficiency:
        return dataclasses.replace(self, **changes)


def reference_gpu(gpu: GPU, calibrated: tuple[GPU, ...]) -> str:
    """Name of the calibrated GPU whose factors `gpu` uses: itself if calibrated, else the one
    nearest in (log peak BF16 FLOP/s, log HBM bandwidth)."""
    for candidate in calibrated:
        if candidate.name == gpu.name:
            return gpu.name

    def distance(other: GPU) -> float:
        return math.hypot(math.log(gpu.bf16_flops / other.bf16_flops),
                          math.log(gpu.hbm_bytes_per_s / other.hbm_bytes_per_s))

    return min(calibrated, key=lambda other: (distance(other), other.name)).name


@dataclass(frozen=True)
class ShippedCalibration:
    """catalog/calibration.yaml parsed: per-GPU factors and communication curves."""

    efficiency: Mapping[str, Efficiency]
    comm: Mapping[str, Any]  # GPU name -> chironsim.perf.comm.CommModel
    specs: Mapping[str, GPU]
    default_gpu: str


def parse_calibration(document: Any, where: str) -> ShippedCalibration:
    from chironsim.catalog import get_gpu
    from chironsim.perf.comm import CommModel

    if not isinstance(document, dict) or not isinstance(document.get("gpus"), dict) or not document["gpus"]:
        raise ConfigError(f"{where}: expected a mapping with a non-empty 'gpus' block")
    efficiency, comm, specs = {}, {}, {}
    for name, block in document["gpus"].items():
        gpu = get_gpu(name)
        if not isinstance(block, dict):
            raise ConfigError(f"{where}: gpus.{name} must be a mapping")
        efficiency[gpu.name] = Efficiency.from_mapping(block.get("efficiency", {}), where=f"{where}: gpus.{name}.efficiency")
        if block.get("comm"):
            comm[gpu.name] = CommModel.from_mapping(gpu.name, gpu.link_bytes_per_s, block["comm"],
                                                    where=f"{where}: gpus.{name}.comm")
        specs[gpu.name] = gpu
    default = get_gpu(document.get("default_gpu", next(iter(specs)))).name
    if default not in efficiency:
        raise ConfigError(f"{where}: default_gpu {default!r} has no calibration")
    return ShippedCalibration(efficiency, comm, specs, default)


@functools.cache
def shipped_calibration() -> ShippedCalibration:
    text = resources.files("chironsim.catalog").joinpath("calibration.yaml").read_text("utf-8")
    return parse_calibration(yaml.safe_load(text), "catalog/calibration.yaml")


def comm_for_gpu(gpu: GPU, retarget: bool = True):
    """The communication curves `gpu` uses: its own, or those of the nearest calibrated GPU
    that has curves, re-targeted to `gpu`'s link rate. ``retarget=False`` keeps the curves
    as measured: for traffic between nodes, whose network does not scale with the GPU's
    NVLink."""
    shipped = shipped_calibration()
    if gpu.name in shipped.comm:
        own = shipped.comm[gpu.name]
        if not retarget or own.link_bytes_per_s == gpu.link_bytes_per_s:
            return own
        return own.for_link(gpu.name, gpu.link_bytes_per_s)
    with_curves = tuple(shipped.specs[name] for name in shipped.comm)
    if not with_curves:
        raise ConfigError("catalog/calibration.yaml has no communication curves")
    reference = reference_gpu(gpu, with_curves)
    curves = shipped.comm[reference]
    return curves.for_link(gpu.name, gpu.link_bytes_per_s) if retarget else curves
