"""Action type → the code that applies it to the live cluster.

The contract (:mod:`chironsim.contract.actions`) declares each action and how it is
validated; this table says what it does. A mechanism registers its action's applier with
:func:`applies` next to its own code, so :meth:`Cluster.apply` is one dictionary look-up and
a new action edits no ``isinstance`` chain. Appliers use the cluster's and instances' public
API only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from chironsim.contract.actions import Drain, ScaleTo, SetMaxNumSeqs
from chironsim.contract.states import STOPPED
from chironsim.sim.events import SCALE_DOWN, SET_MAX_NUM_SEQS

if TYPE_CHECKING:
    from chironsim.sim.cluster import Cluster

Applier = Callable[["Cluster", Any], None]
F = TypeVar("F", bound=Applier)

_APPLIERS: dict[type, Applier] = {}


def applies(action_cls: type) -> Callable[[F], F]:
    """Decorator: ``fn(cluster, action)`` applies every action of ``action_cls``."""
    def register(fn: F) -> F:
        existing = _APPLIERS.get(action_cls)
        if existing is not None and existing is not fn:
            raise ValueError(f"{action_cls.__name__} already has an applier")
        _APPLIERS[action_cls] = fn
        return fn
    return register


def applier_for(action: object) -> Applier:
    """The applier of ``action``'s type; TypeError for a type nothing applies."""
    fn = _APPLIERS.get(type(action))
    if fn is None:
        raise TypeError(f"no applier is registered for action {action!r}")
    return fn


@applies(ScaleTo)
def _scale_to(cluster: "Cluster", action: ScaleTo) -> None:
    cluster.scale_to(action.pool, action.instances, action.reason)


@applies(Drain)
def _drain(cluster: "Cluster", action: Drain) -> None:
    inst = cluster.instance(action.instance_id)
    if inst is not None and inst.state != STOPPED and not cluster.fusion.holds(inst):
        cluster.events.emit(SCALE_DOWN, inst.pool, inst.instance_id, -1, action.reason, "drain")
        inst.drain()


@applies(SetMaxNumSeqs)
def _set_max_num_seqs(cluster: "Cluster", action: SetMaxNumSeqs) -> None:
    inst = cluster.instance(action.instance_id)
    if inst is not None and inst.max_num_seqs != action.max_num_seqs:
        cluster.events.emit(SET_MAX_NUM_SEQS, inst.pool, inst.instance_id, -1, action.reason,
                            f"{inst.max_num_seqs}->{action.max_num_seqs}")
        inst.set_max_num_seqs(action.max_num_seqs)
