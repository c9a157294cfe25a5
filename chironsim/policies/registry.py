"""Policy names → config classes and builders.

A scenario names its policy as ``policy: {kind: ..., ...}``. ``PolicyConfig`` is the
discriminated union that the experiment schema validates against; it is a static type, so
**adding a policy means two edits**: add its config class to the ``PolicyConfig`` union below
and call ``register_policy`` for it (at the bottom of this module for built-in policies).
Code outside the package that registers a policy without touching the union can still
validate its configs with :func:`parse_policy_config`, which dispatches through the registry.

The registry maps names to builder functions and holds no simulation state, so two
simulations in one process never interfere through it; registering a kind twice with a
different class or builder is refused rather than silently replacing the first.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Annotated, Any

import numpy as np
from pydantic import Field

from chironsim.config_base import StrictModel
from chironsim.errors import UnknownNameError
from chironsim.policies.bundle import PolicyBundle
from chironsim.policies.chiron import ChironPolicyConfig, build_chiron
from chironsim.policies.kunserve.config import KunServePolicyConfig
from chironsim.policies.kunserve.policy import build_kunserve
from chironsim.policies.llumnix.config import LlumnixPolicyConfig
from chironsim.policies.llumnix.policy import build_llumnix
from chironsim.policies.reactive import ReactivePolicyConfig, build_reactive
from chironsim.policies.static import StaticPolicyConfig, build_static

PolicyConfig = Annotated[
    StaticPolicyConfig | ReactivePolicyConfig | ChironPolicyConfig | LlumnixPolicyConfig
    | KunServePolicyConfig,
    Field(discriminator="kind")
]

PolicyBuilder = Callable[[Any, np.random.Generator], PolicyBundle]

_REGISTRY: dict[str, tuple[type[StrictModel], PolicyBuilder]] = {}


def register_policy(kind: str, config_cls: type[StrictModel], builder: PolicyBuilder) -> None:
    """Make ``kind`` buildable: ``builder(cfg, rng)`` turns a ``config_cls`` into a bundle."""
    existing = _REGISTRY.get(kind)
    if existing is not None and existing != (config_cls, builder):
        raise ValueError(f"policy kind {kind!r} is already registered to {existing[0].__name__}")
    _REGISTRY[kind] = (config_cls, builder)


def known_policies() -> list[str]:
    return sorted(_REGISTRY)


def parse_policy_config(data: Mapping[str, Any]) -> StrictModel:
    """Validate a ``policy:`` mapping with the config class registered for its ``kind``."""
    kind = data.get("kind")
    if not isinstance(kind, str) or kind not in _REGISTRY:
        raise UnknownNameError("policy", str(kind), known_policies())
    return _REGISTRY[kind][0].model_validate(dict(data))


def build_policy(cfg: StrictModel, rng: np.random.Generator) -> PolicyBundle:
    """Fresh policy objects for one simulation; ``rng`` is the policy's own random stream."""
    kind = getattr(cfg, "kind", None)
    if not isinstance(kind, str) or kind not in _REGISTRY:
        raise UnknownNameError("policy", str(kind), known_policies())
    config_cls, builder = _REGISTRY[kind]
    if not isinstance(cfg, config_cls):
        raise TypeError(
            f"policy kind {kind!r} expects a {config_cls.__name__}, got {type(cfg).__name__}"
        )
    return builder(cfg, rng)


register_policy("static", StaticPolicyConfig, build_static)
register_policy("reactive", ReactivePolicyConfig, build_reactive)
register_policy("chiron", ChironPolicyConfig, build_chiron)
register_policy("llumnix", LlumnixPolicyConfig, build_llumnix)
register_policy("kunserve", KunServePolicyConfig, build_kunserve)
