"""The ``static`` baseline: pools keep the sizes the cluster config gives them.

It isolates routing from scaling: comparing static runs with different routers, or with a
scaling policy at the same mean capacity, shows what each contributes.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Literal

import numpy as np

from chironsim.config_base import ConfigModel
from chironsim.policies.bundle import PolicyBundle
from chironsim.policies.routers import RouterConfig, build_router


class StaticPolicyConfig(ConfigModel):
    """``policy: {kind: static, router: {kind: round_robin}}``; no autoscaler."""

    kind: Literal["static"] = "static"
    router: RouterConfig = RouterConfig()

    def tick_intervals(self) -> dict[str, float]:
        """No controller ticks: nothing to bound."""
        return {}

    def references(self) -> list[tuple[tuple[str | int, ...], str, str]]:
        """No pool or class names."""
        return []

    def growable_pools(self, pools: Collection[str]) -> set[str]:
        """None: every pool keeps the size the cluster config gives it, so a pool that starts
        with no instance never serves a request."""
        return set()


def build_static(cfg: StaticPolicyConfig, rng: np.random.Generator) -> PolicyBundle:
    return PolicyBundle(router=build_router(cfg.router, rng), autoscalers=[], name=cfg.kind)
