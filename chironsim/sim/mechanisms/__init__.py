"""Mechanisms policies trigger inside and between instances (DESIGN §2).

A mechanism acts on instances only at iteration boundaries and only through the public
:class:`~chironsim.sim.instance.Instance` API (detach, adopt, reserve/commit/cancel blocks).
One that runs at every boundary of an instance implements :class:`BoundaryMechanism` and is
listed in ``Instance.mechanisms``; the local scheduler calls it after running decodes have
claimed their growth and before admission, and prices what it returns into the iteration.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from chironsim.sim.instance import Instance


class BoundaryMechanism(Protocol):
    """Runs at each iteration boundary of the instances it is attached to."""

    def at_boundary(self, instance: "Instance", step: int) -> float:
        """Act on ``instance`` before iteration ``step``; return the seconds of KV transfer
        this adds to the iteration (0.0 when it did nothing)."""
        ...
