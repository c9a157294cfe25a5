"""What a configured policy hands the simulator: a router and the autoscalers to tick.

The simulator routes each arrival to an accepting instance among the pools that serve the
request's class, asking ``router`` to choose, and calls each autoscaler's ``on_tick`` every
``autoscaler.interval`` simulated seconds. Later policies (chiron, llumnix, kunserve) add their
own pieces; the bundle stays a plain container so the simulator needs no knowledge of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from chironsim.contract.protocols import Autoscaler, Router


@dataclass
class PolicyBundle:
    """One simulation's policy objects. They hold state, so a bundle serves one run only."""

    router: Router
    autoscalers: list[Autoscaler]
    name: str
    #: Classes held in a cluster-level queue, served earliest-deadline-first: an arrival of
    #: such a class waits there until an instance of a pool serving it has room (free seat and
    #: KV for its prompt), rather than being pushed onto an instance's own queue at once.
    queued_classes: frozenset[str] = field(default_factory=frozenset)
    #: Pools whose instances the policy needs preemptible: when a higher-priority request
    #: cannot be admitted, running lower-priority work is evicted (KV saved to host memory)
    #: and placed again. The policy declares this mechanism itself, so its scenarios need no
    #: pool option for it (``evict_lower_priority`` stays a user option for any policy).
    evicting_pools: frozenset[str] = field(default_factory=frozenset)
    #: Engine settings (``engine.<key>``) the policy needs on every engine it runs, e.g.
    #: Llumnix-base's priority-agnostic engine (``{"priority_scheduling": False}``). Like
    #: ``evicting_pools``, the policy declares it and the cluster builds its engines so; its
    #: scenarios need not repeat it, and the scenario check refuses an explicit engine setting
    #: that contradicts it (the policy config's ``engine_needs``).
    engine_settings: Mapping[str, object] = field(default_factory=lambda: MappingProxyType({}))
