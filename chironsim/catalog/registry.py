"""Load the GPU and model catalogs from the YAML files beside this module and look names up.

The YAML keeps datasheet units (TFLOP/s, GB/s, GiB); this module converts them to SI once.
Lookups are case-insensitive and accept aliases; unknown names raise UnknownNameError with
close matches, because a typo in a GPU name should fail loudly, not fall back to a default.
"""

from __future__ import annotations

import functools
from importlib import resources
from types import MappingProxyType
from typing import Any, Callable, Mapping

import yaml

from chironsim.catalog.specs import GPU, Model
from chironsim.errors import ChironError, UnknownNameError

_GIB = 2**30


def _normalise(name: str) -> str:
    return name.strip().lower().replace("_", "-").replace(" ", "-")


def _read_entries(filename: str) -> list[dict[str, Any]]:
    text = resources.files("chironsim.catalog").joinpath(filename).read_text(encoding="utf-8")
    entries = yaml.safe_load(text)
    if not isinstance(entries, list):
        raise ChironError(f"catalog/{filename}: expected a list of entries")
    return entries


def _gpu_from_entry(entry: dict[str, Any]) -> GPU:
    fp8 = entry["fp8_tflops"]
    return GPU(
        name=entry["name"],
        aliases=tuple(entry.get("aliases", ())),
        bf16_flops=float(entry["bf16_tflops"]) * 1e12,
        fp8_flops=None if fp8 is None else float(fp8) * 1e12,
        hbm_bytes_per_s=float(entry["hbm_gb_per_s"]) * 1e9,
        memory_bytes=int(round(float(entry["memory_gib"]) * _GIB)),
        link_bytes_per_s=float(entry["link_gb_per_s"]) * 1e9,
        host_link_bytes_per_s=float(entry["host_link_gb_per_s"]) * 1e9,
        gpus_per_node=_positive_int(entry["gpus_per_node"], "gpus_per_node"),
        price_per_gpu_hour=float(entry["price_usd_per_gpu_hour"]),
        price_source=str(entry["price_source"]),
        source=str(entry["source"]),
        node_source=str(entry["node_source"]),
        sm_count=None if entry.get("sm_count") is None else _positive_int(entry["sm_count"], "sm_count"),
    )


def _positive_int(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{key} must be a positive whole number, got {value!r}")
    return value


def _model_from_entry(entry: dict[str, Any]) -> Model:
    fields = dict(entry)
    fields["aliases"] = tuple(fields.get("aliases", ()))
    fields["published_params"] = float(fields["published_params"])
    return Model(**fields)


def _index(filename: str, build: Callable[[dict[str, Any]], Any]) -> Mapping[str, Any]:
    by_key: dict[str, Any] = {}
    for position, entry in enumerate(_read_entries(filename), start=1):
        try:
            item = build(entry)
        except (KeyError, TypeError, ValueError) as exc:
            raise ChironError(f"catalog/{filename}: entry {position} is malformed: {exc}") from exc
        for key in (item.name, *item.aliases):
            norm = _normalise(key)
            if norm in by_key and by_key[norm] is not item:
                raise ChironError(f"catalog/{filename}: name {key!r} is used twice")
            by_key[norm] = item
    return MappingProxyType(by_key)


@functools.cache
def _gpus() -> Mapping[str, GPU]:
    return _index("gpus.yaml", _gpu_from_entry)


@functools.cache
def _models() -> Mapping[str, Model]:
    return _index("models.yaml", _model_from_entry)


def _unique(index: Mapping[str, Any]) -> list[Any]:
    seen: dict[str, Any] = {}
    for item in index.values():
        seen.setdefault(item.name, item)
    return list(seen.values())


def list_gpus() -> list[GPU]:
    """Every GPU in the catalog, in file order."""
    return _unique(_gpus())


def list_models() -> list[Model]:
    """Every model in the catalog, in file order."""
    return _unique(_models())


def get_gpu(name: str) -> GPU:
    """The GPU called `name` (case-insensitive; aliases such as "h100" accepted)."""
    try:
        return _gpus()[_normalise(name)]
    except KeyError:
        raise UnknownNameError("GPU", name, [g.name for g in list_gpus()]) from None


def get_model(name: str) -> Model:
    """The model called `name` (case-insensitive; Hugging Face ids accepted as aliases)."""
    try:
        return _models()[_normalise(name)]
    except KeyError:
        raise UnknownNameError("model", name, [m.name for m in list_models()]) from None
