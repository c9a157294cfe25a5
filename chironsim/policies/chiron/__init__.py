"""Chiron (Patke et al., arXiv 2501.08090): hierarchical autoscaling for LLM serving.

The pieces, one module each: :mod:`.config` (every constant, documented), :mod:`.router`
(preference routing with overflow to mixed instances), :mod:`.local` (per-instance batch-size
backpressure), :mod:`.scaler` (instance counts of the three pools). The simulator supplies the
mechanisms: the batch class waits in a cluster-level earliest-deadline-first queue
(``queued_classes``) that batch and mixed instances pull from, and mixed instances evict batch
work for interactive arrivals.
"""

from __future__ import annotations

import numpy as np

from chironsim.contract.protocols import Autoscaler
from chironsim.policies.bundle import PolicyBundle
from chironsim.policies.chiron.config import ChironPolicyConfig
from chironsim.policies.chiron.local import ChironLocalAutoscaler
from chironsim.policies.chiron.router import ChironRouter
from chironsim.policies.chiron.scaler import ChironGlobalAutoscaler

__all__ = [
    "ChironGlobalAutoscaler",
    "ChironLocalAutoscaler",
    "ChironPolicyConfig",
    "ChironRouter",
    "build_chiron",
]


def build_chiron(cfg: ChironPolicyConfig, rng: np.random.Generator) -> PolicyBundle:
    """Fresh Chiron objects for one run. Chiron draws no random numbers; ``rng`` is unused."""
    autoscalers: list[Autoscaler] = []
    if cfg.local:
        autoscalers.append(ChironLocalAutoscaler(cfg))
    if cfg.global_scaling:
        autoscalers.append(ChironGlobalAutoscaler(cfg))
    return PolicyBundle(
        router=ChironRouter(cfg),
        autoscalers=autoscalers,
        name=cfg.kind,
        queued_classes=frozenset({cfg.batch_class}),
        evicting_pools=frozenset({cfg.mixed_pool}),
    )
