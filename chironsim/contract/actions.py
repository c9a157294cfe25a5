"""Actions policies return, each type carrying the check of its own validity.

The action set is open: a new mechanism declares its action here-or-anywhere with
:func:`action_type`, giving it a ``problem(view)`` method that says why an instance of it is
invalid against a cluster view (or None). The simulator pairs each registered type with the
code that applies it (:mod:`chironsim.sim.actions`), and :func:`chironsim.testing.check_policy`
accepts any registered type, so adding an action edits no ``isinstance`` chain.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, TypeVar, runtime_checkable

from chironsim.contract.views import ClusterView


@runtime_checkable
class Action(Protocol):
    """What every action offers: a reason for the event log and a validity check."""

    reason: str

    def problem(self, view: ClusterView) -> str | None:
        """Why this action is invalid against ``view``, or None when it is valid."""
        ...


_REGISTERED: dict[type, None] = {}  # insertion-ordered set of registered action types
A = TypeVar("A", bound=type)


def action_type(cls: A) -> A:
    """Class decorator: declare ``cls`` an action policies may return."""
    if not callable(getattr(cls, "problem", None)):
        raise TypeError(f"action type {cls.__name__} needs a problem(view) method")
    _REGISTERED[cls] = None
    return cls


def registered_actions() -> tuple[type, ...]:
    """Every declared action type, in declaration order."""
    return tuple(_REGISTERED)


def action_problem(action: object, view: ClusterView) -> str | None:
    """Why ``action`` is not a valid action against ``view``, or None."""
    if type(action) not in _REGISTERED:
        names = ", ".join(t.__name__ for t in _REGISTERED)
        return f"{action!r} is not a registered action ({names})"
    return action.problem(view)  # type: ignore[attr-defined]


def _instance_ids(view: ClusterView) -> set[str]:
    return {inst.instance_id for pool in view.pools.values() for inst in pool.instances}


def _names_instance(action: object, instance_id: str, view: ClusterView) -> str | None:
    return None if instance_id in _instance_ids(view) else f"{action!r} names no instance in the view"


@action_type
@dataclass(frozen=True, slots=True)
class ScaleTo:
    """Set the number of active (provisioning + loading + ready) instances of ``pool``.

    Scaling up provisions cold instances; scaling down drains the instances with the fewest
    outstanding requests first (they stop once empty). The cluster clamps to the pool's bounds.
    """

    pool: str
    instances: int
    reason: str = ""

    def problem(self, view: ClusterView) -> str | None:
        pool = view.pools.get(self.pool)
        if pool is None:
            return f"{self!r} names no pool in the view (pools: {sorted(view.pools)})"
        if not isinstance(self.instances, int) or not (
                pool.min_instances <= self.instances <= pool.max_instances):
            return (f"{self!r} is outside pool {pool.name!r} bounds "
                    f"[{pool.min_instances}, {pool.max_instances}]")
        return None


@action_type
@dataclass(frozen=True, slots=True)
class Drain:
    """Stop sending work to ``instance_id``; it stops once it holds no requests."""

    instance_id: str
    reason: str = ""

    def problem(self, view: ClusterView) -> str | None:
        return _names_instance(self, self.instance_id, view)


@action_type
@dataclass(frozen=True, slots=True)
class SetMaxNumSeqs:
    """Change an instance's batch-size limit (takes effect at its next iteration)."""

    instance_id: str
    max_num_seqs: int
    reason: str = ""

    def problem(self, view: ClusterView) -> str | None:
        missing = _names_instance(self, self.instance_id, view)
        if missing is not None:
            return missing
        if not isinstance(self.max_num_seqs, int) or self.max_num_seqs < 1:
            return f"{self!r} sets max_num_seqs below 1"
        return None
