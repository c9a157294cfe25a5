"""Frozen snapshots of cluster state that policies read.

Policies never touch SimPy or the live simulation: the cluster hands them these immutable
views and applies the actions they return. That keeps every policy unit-testable with views
built by hand.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from chironsim.contract.load import LoadReport
from chironsim.contract.states import LOADING, PROVISIONING, READY


def kv_utilization(used_blocks: int, capacity_blocks: int) -> float:
    """Blocks used over capacity; an instance with no KV cache counts as full (nothing fits).
    One formula for the view, the live views routers read and the timeseries."""
    return used_blocks / capacity_blocks if capacity_blocks else 1.0


@dataclass(frozen=True, slots=True)
class InstanceView:
    """One instance as a policy sees it at ``time``.

    ``running`` counts admitted requests (decoding or mid-prefill); ``waiting`` those queued at
    the instance (including swapped-out ones); ``outstanding`` is their sum. KV figures are in
    blocks. Counters named ``*_total`` are cumulative since the instance started, so policies
    derive rates over their own interval from differences between two views:
    ``tokens_generated`` (output tokens), ``decode_iterations`` and ``decode_seconds`` (number
    and summed duration of iterations that advanced at least one decode — the mean
    inter-token latency over an interval is Δdecode_seconds ÷ Δdecode_iterations), and
    ``pure_decode_iterations`` / ``pure_decode_seconds``, the same over iterations that ran
    no prefill chunk and moved no KV: their mean is the part of the ITL that the batch size
    controls, without the stalls that admitting new prompts adds.
    ``running_by_class`` counts running requests per class (classes with none are omitted).
    ``group`` names the fused group the instance belongs to (its leader's id), or ''.
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
    decode_iterations: int = 0
    decode_seconds: float = 0.0
    pure_decode_iterations: int = 0
    pure_decode_seconds: float = 0.0
    running_by_class: tuple[tuple[str, int], ...] = ()
    #: The leader id of the fused group (KunServe's parameter drop) this instance belongs to
    #: from the drop on, '' when independent; a leader's group is its own id.
    group: str = ""

    @property
    def outstanding(self) -> int:
        return self.running + self.waiting

    @property
    def kv_free_blocks(self) -> int:
        return self.kv_capacity_blocks - self.kv_used_blocks

    @property
    def kv_utilization(self) -> float:
        return kv_utilization(self.kv_used_blocks, self.kv_capacity_blocks)

    @property
    def accepting(self) -> bool:
        """Only ready instances take new requests; draining ones finish what they hold."""
        return self.state == READY

    def running_of(self, request_class: str) -> int:
        """Running requests of one class."""
        for name, count in self.running_by_class:
            if name == request_class:
                return count
        return 0


@dataclass(frozen=True, slots=True)
class PoolView:
    """A pool's instances (all lifecycle states except stopped) and its cluster-level queue."""

    name: str
    instances: tuple[InstanceView, ...]
    queued: int = 0
    min_instances: int = 0
    max_instances: int = 1_000_000
    #: The instances' last load reports, for a policy that polls them (Llumnix); empty in a
    #: view built for a policy that does not. A poller's view carries these and no
    #: ``instances``: building full views at every poll is what polling must not cost.
    load: tuple[LoadReport, ...] = ()
    #: KV blocks a fused group of g of this pool's instances gains over its members' own
    #: (KunServe's parameter drop, ``chironsim.perf.drop.fused_blocks_gained``), at index
    #: g − 2 for g = 2 … min(layers, MAX_GROUP_SIZE): what a drop plan weighs. Fixed per pool.
    fusion_gain_blocks: tuple[int, ...] = ()

    def count(self, *states: str) -> int:
        """Instances in any of ``states``. A poller's view carries load reports and no
        instance views; each report has its instance's state, so it counts those (a view
        with both counts the instance views, which describe the same instances)."""
        members = self.instances if self.instances or not self.load else self.load
        return sum(1 for inst in members if inst.state in states)

    @property
    def active(self) -> int:
        """Instances that are or will become ready (provisioning, loading, ready), in a
        full view or a poller's."""
        return self.count(PROVISIONING, LOADING, READY)


@dataclass(frozen=True, slots=True)
class QueueView:
    """A cluster-level queue of one request class (policies that hold a class globally).

    Served earliest-deadline-first. ``remaining_tokens_mean``/``_std`` describe the output tokens
    the queued requests still have to generate (evicted requests count only what is left).
    """

    request_class: str
    length: int
    remaining_tokens_mean: float = 0.0
    remaining_tokens_std: float = 0.0
    earliest_deadline: float = float("inf")
    oldest_arrival: float = float("inf")


@dataclass(frozen=True, slots=True)
class ClusterView:
    """Everything an autoscaler sees at one tick."""

    time: float
    pools: dict[str, PoolView] = field(default_factory=dict)
    queues: dict[str, QueueView] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RequestView:
    """What a router knows about an arriving request."""

    request_id: int
    request_class: str
    priority: int
    prompt_tokens: int
    output_tokens: int
    arrival: float
