"""The small protocols every policy implements. None of them may import SimPy."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from chironsim.contract.actions import Action
from chironsim.contract.views import ClusterView, InstanceView, RequestView


@runtime_checkable
class Router(Protocol):
    """Places an arriving request on one of the accepting instances of its pool."""

    def route(self, request: RequestView, candidates: Sequence[InstanceView]) -> str | None:
        """Return the chosen instance id, or ``None`` to hold the request in the pool's queue.

        ``candidates`` is never empty and holds only accepting (ready) instances, in a stable
        order (by instance id creation order).
        """
        ...


@runtime_checkable
class Autoscaler(Protocol):
    """Decides, every ``interval`` simulated seconds, how the cluster should change.

    An autoscaler that sets ``observes = "load"`` (a poller, like Llumnix's manager) is given
    a view whose pools carry the instances' :class:`~chironsim.contract.load.LoadReport` in
    ``PoolView.load`` and no instance views; any other gets the full view.
    """

    interval: float

    def on_tick(self, view: ClusterView) -> Sequence[Action]:
        ...
