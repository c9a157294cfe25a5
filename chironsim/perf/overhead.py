"""The engine's own cost per iteration, beyond the roofline's kernels, and engine presets.

A serving engine spends time every iteration that no kernel profile sees: scheduling, preparing
inputs, sampling, turning outputs into Python objects, and, without CUDA graphs, launching
every kernel of every layer. chironsim prices it as

    overhead = constant_s + per_sequence_s x S + per_layer_launch_s x L

with S the sequences that sample a token in the iteration (every decode, plus one when it holds
prefill tokens: the rows the LM head is priced on, chironsim/perf/roofline.py) and L the layers
it runs. The launch term applies only to an engine run without CUDA graphs, and only to
iterations that decode: those are what engines capture in graphs (vLLM V0 decode batches, V1
also mixed ones), while a prefill-only iteration runs eagerly either way and its kernels are
long enough for the CPU to launch the next ones while they run. Charging every iteration that
holds a decode (not only decode-only ones) keeps a larger batch never cheaper: adding a
prefill chunk to a decode iteration cannot remove its launches.

A *preset* (chironsim/catalog/engines.yaml) names a common engine: its three overhead values,
each with the public measurement it comes from, and its batching policy (``chunked`` or
``prefill_first``, chironsim/sim/engine/scheduler.py). ``default`` is the model as calibrated:
the GPU's own fitted ``iteration_overhead_s`` as the constant, no per-sequence term.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources

import yaml

from chironsim.errors import ConfigError

#: the batching policies an engine can have (chironsim/sim/engine/scheduler.py)
SCHEDULERS = ("chunked", "prefill_first")
DEFAULT_PRESET = "default"


@dataclass(frozen=True, slots=True)
class EngineOverhead:
    """The overhead terms one pool's iterations pay (seconds).

    constant_s: per iteration; None means the GPU's calibrated ``iteration_overhead_s``.
    per_sequence_s: per sequence that samples a token.
    launch_per_layer_s: per layer of an iteration that decodes (0 with CUDA graphs).
    """

    constant_s: float | None = None
    per_sequence_s: float = 0.0
    launch_per_layer_s: float = 0.0

    def __post_init__(self) -> None:
        for name in ("constant_s", "per_sequence_s", "launch_per_layer_s"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value < 1.0:
                raise ConfigError(f"engine overhead {name} must be in [0, 1) seconds, got {value!r}")

    def seconds(self, constant_s: float, sequences: float, layers: int, decodes: bool) -> float:
        """The overhead of one iteration, for checking by hand (the roofline evaluates the same
        terms vectorised): ``constant_s`` is the constant to use when this one is None;
        ``decodes``: whether the iteration holds any decode."""
        constant = constant_s if self.constant_s is None else self.constant_s
        launch = self.launch_per_layer_s * layers if decodes else 0.0
        return constant + self.per_sequence_s * sequences + launch


#: The model as calibrated: the GPU's own constant, nothing per sequence, CUDA graphs on.
CALIBRATED = EngineOverhead()


@dataclass(frozen=True, slots=True)
class EnginePreset:
    """One named engine from catalog/engines.yaml (values in seconds; None where no public
    figure exists)."""

    name: str
    engine: str
    scheduler: str
    constant_s: float | None
    per_sequence_s: float
    per_layer_launch_s: float | None
    sources: Mapping[str, str] = field(default_factory=dict)

    def overhead(self, cuda_graphs: bool = True, constant_s: float | None = None,
                 per_sequence_s: float | None = None,
                 per_layer_launch_s: float | None = None) -> EngineOverhead:
        """The terms this preset gives, each explicit argument replacing the preset's value.
        Without CUDA graphs a per-layer launch cost is needed: the argument's or the preset's."""
        launch = 0.0
        if not cuda_graphs:
            launch = self.per_layer_launch_s if per_layer_launch_s is None else per_layer_launch_s
            if launch is None:
                raise ConfigError(
                    f"cuda_graphs: false needs a per-layer launch cost, and preset {self.name!r} "
                    "has no published one: set engine.overhead.per_layer_launch_s "
                    "(docs/latency-model.md, \"Engine overhead and batching policy\")")
        return EngineOverhead(
            constant_s=self.constant_s if constant_s is None else constant_s,
            per_sequence_s=self.per_sequence_s if per_sequence_s is None else per_sequence_s,
            launch_per_layer_s=launch,
        )


def _number(value: object, where: str, allow_none: bool) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ConfigError(f"{where}: must be a number of seconds in [0, 1){' or null' if allow_none else ''}, "
                          f"got {value!r}")
    return float(value)


def parse_presets(document: object, where: str) -> dict[str, EnginePreset]:
    """Presets from an engines.yaml document, naming `where` in any error."""
    presets = document.get("presets") if isinstance(document, dict) else None
    if not isinstance(presets, dict) or DEFAULT_PRESET not in presets:
        raise ConfigError(f"{where}: expected a 'presets' mapping that holds {DEFAULT_PRESET!r}")
    keys = {"engine", "scheduler", "constant_s", "per_sequence_s", "per_layer_launch_s", "sources"}
    parsed = {}
    for name, entry in presets.items():
        at = f"{where}: presets.{name}"
        if not isinstance(entry, dict) or set(entry) != keys:
            raise ConfigError(f"{at}: expected exactly the keys {sorted(keys)}")
        if entry["scheduler"] not in SCHEDULERS:
            raise ConfigError(f"{at}.scheduler: must be one of {', '.join(SCHEDULERS)}, got {entry['scheduler']!r}")
        sources = entry["sources"]
        if not isinstance(sources, dict) or not {"constant_s", "per_sequence_s", "per_layer_launch_s"} <= set(sources):
            raise ConfigError(f"{at}.sources: every overhead value needs its source")
        parsed[name] = EnginePreset(
            name=name, engine=str(entry["engine"]), scheduler=entry["scheduler"],
            constant_s=_number(entry["constant_s"], f"{at}.constant_s", allow_none=True),
            per_sequence_s=_number(entry["per_sequence_s"], f"{at}.per_sequence_s", allow_none=False),
            per_layer_launch_s=_number(entry["per_layer_launch_s"], f"{at}.per_layer_launch_s", allow_none=True),
            sources={str(k): str(v) for k, v in sources.items()},
        )
    return parsed


@functools.cache
def engine_presets() -> Mapping[str, EnginePreset]:
    """The shipped presets (catalog/engines.yaml), by name."""
    text = resources.files("chironsim.catalog").joinpath("engines.yaml").read_text("utf-8")
    return parse_presets(yaml.safe_load(text), "catalog/engines.yaml")


def engine_preset(name: str) -> EnginePreset:
    """The preset called `name`; a ConfigError that lists the known ones otherwise."""
    presets = engine_presets()
    if name not in presets:
        raise ConfigError(f"unknown engine preset {name!r}; presets: {', '.join(sorted(presets))} "
                          "(chironsim/catalog/engines.yaml)")
    return presets[name]
