"""What a router is handed at an arrival: each ready instance as a view read on demand.

A router runs once per arrival and usually reads two or three figures of each candidate
(outstanding requests, KV utilisation, its id). Building a full frozen
:class:`~chironsim.contract.views.InstanceView` of every candidate for that made the cost of
an arrival grow with the cluster: on the 8-instance Azure hour, 183k views for 19k arrivals,
a third of the run; on 64 instances, 1.5M views and more than half of it
(``docs/performance.md``). A :class:`LiveInstanceView` is one small object per instance, made
once, whose fields are computed from the live instance when a router reads them.

Why this is exact: nothing in the simulation moves while ``route()`` runs, so a field read
during the call has the value a snapshot taken at the start of the call would have had —
the same formulas as :meth:`Instance.view`, at the same simulated instant. What it gives up
is that the object keeps following its instance after the call; a router that wants figures
for later copies them (:meth:`LiveInstanceView.snapshot`). No router in the project keeps
candidates between calls.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from chironsim.contract.states import READY
from chironsim.contract.views import InstanceView

if TYPE_CHECKING:  # the instance module imports SimPy; this one only reads instances
    from chironsim.sim.instance import Instance

__all__ = ["LiveInstanceView"]


class LiveInstanceView(InstanceView):
    """An :class:`InstanceView` of one instance whose every field is read when accessed.

    A subclass, so that routers (and the type of ``Router.route``) see an ``InstanceView``;
    each dataclass field is shadowed by a property with the formula of
    :meth:`Instance.view`. Derived figures (``outstanding``, ``kv_utilization``,
    ``kv_free_blocks``) are computed directly rather than through the fields, because routers
    read them for every candidate.
    """

    __slots__ = ("_inst",)

    def __init__(self, inst: "Instance") -> None:  # noqa: D107 - the parent's fields stay unset
        object.__setattr__(self, "_inst", inst)  # the dataclass is frozen

    def snapshot(self) -> InstanceView:
        """A frozen view of the instance now, for a caller that keeps it past the call."""
        inst = self._inst
        return inst.view(inst.env.now)

    # --- identity and configuration --------------------------------------------------------
    @property
    def instance_id(self) -> str:  # type: ignore[override]
        return self._inst.instance_id

    @property
    def pool(self) -> str:  # type: ignore[override]
        return self._inst.pool

    @property
    def state(self) -> str:  # type: ignore[override]
        return self._inst.state

    @property
    def group(self) -> str:  # type: ignore[override]
        return self._inst.group

    @property
    def max_num_seqs(self) -> int:  # type: ignore[override]
        return self._inst.max_num_seqs

    @property
    def accepting(self) -> bool:
        return self._inst.state == READY

    # --- requests held -----------------------------------------------------------------------
    @property
    def running(self) -> int:  # type: ignore[override]
        inst = self._inst
        return (len(inst.decodes.members) + len(inst.prefilling) + len(inst.arriving)
                + len(inst.paused))

    @property
    def waiting(self) -> int:  # type: ignore[override]
        inst = self._inst
        return len(inst.waiting) + len(inst.swapped)

    @property
    def outstanding(self) -> int:
        # running + waiting: the instance's count of the requests it holds, kept as they come
        # and go (Instance.held_count reads the same integer)
        return self._inst._held

    @property
    def running_by_class(self) -> tuple[tuple[str, int], ...]:  # type: ignore[override]
        return tuple(self._inst.running_by_class.items())

    def running_of(self, request_class: str) -> int:
        return self._inst.running_by_class.get(request_class, 0)

    # --- KV cache ----------------------------------------------------------------------------
    @property
    def kv_used_blocks(self) -> int:  # type: ignore[override]
        inst = self._inst
        return inst.kv_used_at(inst.env.now)

    @property
    def kv_capacity_blocks(self) -> int:  # type: ignore[override]
        return self._inst.kv.capacity

    @property
    def kv_free_blocks(self) -> int:
        inst = self._inst
        return inst.kv.capacity - inst.kv_used_at(inst.env.now)

    @property
    def kv_utilization(self) -> float:
        inst = self._inst  # contract.views.kv_utilization's formula, inline (a tie-break read)
        capacity = inst.kv.capacity
        return inst.kv_used_at(inst.env.now) / capacity if capacity else 1.0

    # --- cumulative counters -----------------------------------------------------------------
    @property
    def tokens_generated(self) -> int:  # type: ignore[override]
        inst = self._inst
        return inst.occupancy(inst.env.now)[3]

    @property
    def decode_iterations(self) -> int:  # type: ignore[override]
        inst = self._inst  # exact inside a stretch, as Instance.view
        return inst.decode_counters(inst.env.now)[0]

    @property
    def decode_seconds(self) -> float:  # type: ignore[override]
        inst = self._inst  # exact inside a stretch, as Instance.view
        return inst.decode_counters(inst.env.now)[1]

    @property
    def pure_decode_iterations(self) -> int:  # type: ignore[override]
        inst = self._inst  # exact inside a stretch, as Instance.view
        return inst.decode_counters(inst.env.now)[2]

    @property
    def pure_decode_seconds(self) -> float:  # type: ignore[override]
        inst = self._inst  # exact inside a stretch, as Instance.view
        return inst.decode_counters(inst.env.now)[3]
