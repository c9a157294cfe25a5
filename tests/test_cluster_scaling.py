"""A pool's ``max_instances`` bounds the GPUs it holds, draining instances included.

A draining instance still holds its GPUs until its last request finishes, so a scale-up issued
while one drains may launch only what fits beside it; otherwise a policy that replaces
instances (drain one, start another) briefly runs above its budget.
"""

from __future__ import annotations

from chironsim.contract.actions import Drain, ScaleTo
from chironsim.contract.states import DRAINING, STOPPED
from scenarios import build_simulation, light_scenario


def _long_request_scenario() -> dict:
    """One instance (cap 2) busy with long requests, so a drain takes a while."""
    cfg = light_scenario("cap", seed=1, duration_s=20.0)
    stream = cfg["workload"]["streams"][0]
    stream["output_tokens"] = {"kind": "fixed", "value": 4000}
    cfg["cluster"]["pools"]["default"].update({"min_instances": 0, "max_instances": 2})
    cfg["cluster"]["lifecycle"] = {"provision_s": 1.0, "engine_startup_s": 1.0}
    return cfg


def test_scale_up_counts_draining_instances_against_max_instances():
    sim = build_simulation(_long_request_scenario())
    cluster, env = sim.cluster, sim.env
    seen: dict[str, object] = {}
    peak = [0]

    def live() -> list:
        return [i for i in cluster.instances["default"] if i.state != STOPPED]

    def watch():
        while True:
            peak[0] = max(peak[0], len(live()))
            yield env.timeout(0.05)

    def script():
        yield env.timeout(10.0)
        first = live()[0]
        assert first.held_count > 0, "the scenario must keep the first instance busy"
        cluster.apply([Drain(first.instance_id)])
        assert first.state == DRAINING
        # Active 0 + draining 1: a target of 2 may add only one instance.
        cluster.apply([ScaleTo("default", 2)])
        seen["while_draining"] = len(live())
        while first.state != STOPPED:
            yield env.timeout(0.5)
        cluster.apply([ScaleTo("default", 2)])
        seen["after_drain"] = len(live())

    env.process(watch())
    env.process(script())
    sim.run()
    assert seen == {"while_draining": 2, "after_drain": 2}
    assert peak[0] == 2
    launches = [e for e in sim.events if e["kind"] == "scale_up"]
    assert len(launches) == 2


def test_scale_down_ignores_draining_instances():
    """Draining instances never make the cluster drain active ones to fit a target."""
    cfg = _long_request_scenario()
    cfg["cluster"]["pools"]["default"].update({"instances": 2})
    sim = build_simulation(cfg)
    cluster, env = sim.cluster, sim.env
    states: dict[str, list[str]] = {}

    def script():
        yield env.timeout(10.0)
        first, second = cluster.instances["default"][:2]
        cluster.apply([Drain(first.instance_id)])
        cluster.apply([ScaleTo("default", 1)])  # already one active: nothing to do
        states["after"] = [first.state, second.state]

    env.process(script())
    sim.run()
    assert states["after"][0] in (DRAINING, STOPPED)
    assert states["after"][1] not in (DRAINING, STOPPED)
