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

from chironsim.contract.states import READY
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
    """Ids of the instances in ``view``: their views, or their load reports in a view that
    carries reports only (a poller's, :attr:`PoolView.load`)."""
    return ({inst.instance_id for pool in view.pools.values() for inst in pool.instances}
            | {r.instance_id for pool in view.pools.values() for r in pool.load})


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


#: What a :class:`Migrate` without a request id moves: a running request chosen on the live
#: source (:func:`chironsim.contract.load.choose_request`), or the head of its waiting queue.
MIGRATE_PICKS = ("last_running", "shortest_running", "first_waiting")


@action_type
@dataclass(frozen=True, slots=True)
class Migrate:
    """Move one request from ``src`` to ``dst`` (DESIGN §2 mechanisms; Llumnix's migration).

    ``request_id`` names the request, or None to let the source choose at its next iteration
    boundary by ``pick``: ``last_running`` / ``shortest_running`` (a decoding request, lowest
    priority first when ``low_priority_first``) or ``first_waiting`` (a queued request: handed
    over with no KV to copy). A running request moves by the cluster's ``migration`` settings
    (live multi-stage copy, blocking copy or recompute); one that cannot move when the source
    gets to it (finished, preempted, the destination full or busy) is an aborted migration in
    the event log, not an error.
    """

    src: str
    dst: str
    request_id: int | None = None
    pick: str = "last_running"
    low_priority_first: bool = False
    reason: str = ""

    def problem(self, view: ClusterView) -> str | None:
        ids = _instance_ids(view)
        for end in (self.src, self.dst):
            if end not in ids:
                return f"{self!r} names no instance in the view"
        if self.src == self.dst:
            return f"{self!r} migrates an instance to itself"
        if self.pick not in MIGRATE_PICKS:
            return f"{self!r} has pick {self.pick!r}, not one of {MIGRATE_PICKS}"
        if self.request_id is not None and (not isinstance(self.request_id, int)
                                            or self.request_id < 0):
            return f"{self!r} names request {self.request_id!r}, not a request id"
        state = _state_of(self.dst, view)
        if state is not None and state != READY:
            return f"{self!r} migrates into an instance that is {state}, not ready"
        return None


def _state_of(instance_id: str, view: ClusterView) -> str | None:
    for pool in view.pools.values():
        for inst in pool.instances:
            if inst.instance_id == instance_id:
                return inst.state
        for report in pool.load:
            if report.instance_id == instance_id:
                return report.state
    return None


#: How a fused group treats requests decoding when it forms (sim.config.FusionConfig).
STALE_MODES = ("live", "blocking", "recompute")


@action_type
@dataclass(frozen=True, slots=True)
class DropParameters:
    """Fuse ``instances`` (2 or more ready instances of one pool, none in a group) into one
    pipelined group (KunServe's parameter drop; :mod:`chironsim.sim.mechanisms.fusion`). The
    first instance leads: it takes the group's requests and KV; the others become ``fused``."""

    instances: tuple[str, ...]
    reason: str = ""
    #: 'live', 'blocking' or 'recompute' for the requests decoding when the group forms, and
    #: requests exchanged per step; None: the cluster's ``fusion`` settings.
    stale_requests: str | None = None
    exchange_batch_size: int | None = None

    def problem(self, view: ClusterView) -> str | None:
        if not isinstance(self.instances, tuple) or len(self.instances) < 2:
            return f"{self!r} names fewer than 2 instances"
        if self.stale_requests is not None and self.stale_requests not in STALE_MODES:
            return f"{self!r} has stale_requests {self.stale_requests!r}, not one of {STALE_MODES}"
        if self.exchange_batch_size is not None and not _positive_int(self.exchange_batch_size):
            return f"{self!r} exchanges fewer than 1 request per step"
        if len(set(self.instances)) != len(self.instances):
            return f"{self!r} names an instance twice"
        ids = _instance_ids(view)
        for instance_id in self.instances:
            if instance_id not in ids:
                return f"{self!r} names no instance {instance_id!r} in the view"
            state = _state_of(instance_id, view)
            if state is not None and state != READY:
                return f"{self!r} fuses {instance_id!r}, which is {state}, not ready"
        return None


@action_type
@dataclass(frozen=True, slots=True)
class RestoreParameters:
    """Reload the dropped layers of the fused group led by ``group`` and split it back into
    independent instances once its pipelined requests are converted."""

    group: str
    reason: str = ""
    #: requests converted back per step; None: the cluster's ``fusion.restore_batch_size``
    batch_size: int | None = None

    def problem(self, view: ClusterView) -> str | None:
        if self.batch_size is not None and not _positive_int(self.batch_size):
            return f"{self!r} converts fewer than 1 request per step"
        return _names_instance(self, self.group, view)


def _positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1
