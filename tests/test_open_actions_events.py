"""Actions and events are open registries: a new kind plugs in without editing the simulator."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from chironsim.contract.actions import action_problem, action_type, registered_actions
from chironsim.contract.views import ClusterView
from chironsim.sim.actions import applier_for, applies
from chironsim.sim.events import EventKind, EventLog, event_kind, event_kinds
from chironsim.testing import check_policy, default_views
from scenarios import build_simulation, light_scenario

NOTE = event_kind("test_note", "instance", "what the test noted")


@action_type
@dataclass(frozen=True, slots=True)
class _Note:
    """A new action: log one note about an instance (validated against the view)."""

    instance_id: str
    reason: str = ""

    def problem(self, view: ClusterView) -> str | None:
        ids = {i.instance_id for pool in view.pools.values() for i in pool.instances}
        return None if self.instance_id in ids else f"{self!r} names no instance"


@applies(_Note)
def _apply_note(cluster, action: _Note) -> None:
    inst = cluster.instance(action.instance_id)
    cluster.events.emit(NOTE, inst.pool, inst.instance_id, -1, action.reason)


def test_a_new_action_is_applied_through_its_registered_code():
    sim = build_simulation(light_scenario("note", seed=1, duration_s=5.0))
    first = sim.cluster.instances["default"][0]
    sim.cluster.apply([_Note(first.instance_id, "hello")])
    assert [(e["kind"], e["instance_id"], e["reason"]) for e in sim.events] == [
        ("test_note", first.instance_id, "hello")]
    assert _Note in registered_actions()


def test_an_unregistered_action_is_refused_by_checker_and_cluster():
    @dataclass(frozen=True)
    class Stray:
        reason: str = ""

        def problem(self, view):
            return None

    assert "not a registered action" in action_problem(Stray(), ClusterView(time=0.0))
    with pytest.raises(TypeError, match="no applier"):
        applier_for(Stray())


def test_check_policy_accepts_any_registered_action():
    class Noter:
        interval = 5.0

        def on_tick(self, view):
            ids = [i.instance_id for p in view.pools.values() for i in p.instances]
            return [_Note(ids[0], "tick")] if ids else []

    from chironsim.policies.bundle import PolicyBundle
    from chironsim.policies.routers import RoundRobinRouter

    check_policy(lambda rng: PolicyBundle(RoundRobinRouter(), [Noter()], "noter"),
                 default_views())


def test_event_kinds_are_declared_once_and_undeclared_kinds_are_refused():
    assert event_kind("test_note", "instance", "what the test noted") is NOTE
    with pytest.raises(ValueError, match="already declared"):
        event_kind("test_note", "request", "something else")
    log = EventLog(lambda: 0.0)
    with pytest.raises(ValueError, match="never declared"):
        log.emit(EventKind("typo", "instance", ""))
    assert {"scale_up", "preempt", "evict", "reject", "test_note"} <= set(event_kinds())
