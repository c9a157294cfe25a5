"""Frozen snapshots of cluster state that policies read.

Policies never touch SimPy or the live simulation: the cluster hands them these immutable
views and applies the actions they return. That keeps every policy unit-testable with views
built by hand.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Instance lifecycle states, in order.
PROVISIONING = "provisioning"
LOADING = "loading"
READY = "ready"
DRAINING = "draining"
STOPPED = "stopped"
LIFECYCLE_STATES = (PROVISIONING, LOADING, READY, DRAINING, STOPPED)


@dataclass(frozen=True, slots=True)
class InstanceView:
    """One instance as a policy sees it at ``time``.

    ``running`` counts admitted requests (decoding or mid-prefill); ``waiting`` those queued at
    the instance (including swapped-out ones); ``outstanding`` is their sum. KV figures are in
    blocks. ``tokens_generated`` is cumulative, so policies derive throughput from differences.
    """

    instance_id: str
    pool: str
    state: str
    running: int
    waiting: int
    kv_used_blocks: int
    kv_capacity_blocks: int
    max_num_seqs: int
    tokens_generated: int
    mean_itl: float = float("nan")
    classes_running: tuple[str, ...] = ()

    @property
    def outstanding(self) -> int:
        return self.running + self.waiting

    @property
    def kv_free_blocks(self) -> int:
        return self.kv_capacity_blocks - self.kv_used_blocks

    @property
    def kv_utilization(self) -> float:
        return self.kv_used_blocks / self.kv_capacity_blocks if self.kv_capacity_blocks else 1.0

    @property
    def accepting(self) -> bool:
        """Only ready instances take new requests; draining ones finish what they hold."""
        return self.state == READY


@dataclass(frozen=True, slots=True)
class PoolView:
    """A pool's instances (all lifecycle states except stopped) and its cluster-level queue."""

    name: str
    instances: tuple[InstanceView, ...]
    queued: int = 0
    min_instances: int = 0
    max_instances: int = 1_000_000

    def count(self, *states: str) -> int:
        return sum(1 for inst in self.instances if inst.state in states)

    @property
    def active(self) -> int:
        """Instances that are or will become ready (provisioning, loading, ready)."""
        return self.count(PROVISIONING, LOADING, READY)


@dataclass(frozen=True, slots=True)
class ClusterView:
    """Everything an autoscaler sees at one tick."""

    time: float
    pools: dict[str, PoolView] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RequestView:
    """What a router knows about an arriving request."""

    request_id: int
    request_class: str
    priority: int
    prompt_tokens: int
    output_tokens: int
    arrival: float
