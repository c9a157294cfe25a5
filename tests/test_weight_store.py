"""The shared weight store is fluid processor sharing: checked against closed-form times.

With bandwidth W and n loads in progress each advances at W/n. A cancelled load (an instance
stopped while loading) gives its share back at once, so the others finish sooner; a cold start
cancelled by a scale-down must not slow the launches that go on.
"""

from __future__ import annotations

import pytest
import simpy

from chironsim.contract.actions import Drain, ScaleTo
from chironsim.contract.states import LOADING
from chironsim.sim.weight_store import WeightStore
from scenarios import build_simulation, light_scenario

W = 2e9   # bytes/s
B = 16e9  # bytes: 8 s alone


def finish_times(env: simpy.Environment, events: dict[str, simpy.Event]) -> dict[str, float]:
    done: dict[str, float] = {}
    for name, ev in events.items():
        ev.callbacks.append(lambda e, name=name: done.__setitem__(name, (env.now, e.value)))
    env.run()
    return done


def test_one_load_alone_takes_bytes_over_bandwidth():
    env = simpy.Environment()
    store = WeightStore(env, W)
    done = finish_times(env, {"a": store.load(B)})
    assert done["a"][0] == pytest.approx(B / W)
    assert store.active_loads == 0


def test_concurrent_and_staggered_loads_share_the_bandwidth():
    env = simpy.Environment()
    store = WeightStore(env, W)
    events = {"a": store.load(B), "b": store.load(B)}

    def late():
        yield env.timeout(4.0)
        events["c"] = store.load(B)
        events["c"].callbacks.append(lambda e: done.__setitem__("c", env.now))

    done: dict[str, float] = {}
    env.process(late())
    for name in ("a", "b"):
        events[name].callbacks.append(lambda e, name=name: done.__setitem__(name, env.now))
    env.run()
    # 0-4 s: a and b at W/2 -> 12 GB left each; then three share: a and b finish after
    # 12 GB at W/3 = 18 s (t = 22), when c has 4 GB left, alone at W: 2 s more (t = 24).
    assert done["a"] == pytest.approx(22.0)
    assert done["b"] == pytest.approx(22.0)
    assert done["c"] == pytest.approx(24.0)


def test_a_cancelled_load_gives_its_share_back_at_once():
    env = simpy.Environment()
    store = WeightStore(env, W)
    a, b = store.load(B), store.load(B)
    result: dict[str, tuple[float, object]] = {}
    a.callbacks.append(lambda e: result.__setitem__("a", (env.now, e.value)))
    b.callbacks.append(lambda e: result.__setitem__("b", (env.now, e.value)))

    def cancel_b():
        yield env.timeout(2.0)
        store.cancel(b)
        store.cancel(b)  # a second cancel, or one of a finished load, does nothing

    env.process(cancel_b())
    env.run()
    # 0-2 s at W/2: a has 14 GB left, alone from then on: 7 s more.
    assert result["a"] == (pytest.approx(9.0), None)
    assert result["b"] == (2.0, False)
    store.cancel(a)
    assert store.active_loads == 0


def test_a_cold_start_stopped_while_loading_does_not_slow_the_others():
    """Two 70B-sized cold starts begin together; one is drained while loading. The other is
    ready as if it had loaded alone from that moment on."""
    cfg = light_scenario("store", seed=1, duration_s=400.0)
    cfg["cluster"]["model"] = "llama-3.1-70b"
    cfg["cluster"]["gpu"] = "a100-80gb"
    cfg["cluster"]["pools"]["default"].update({"tp": 4, "min_instances": 0, "max_instances": 3})
    cfg["cluster"]["lifecycle"] = {"provision_s": 10.0, "load_bandwidth_gbps": 2.0,
                                   "engine_startup_s": 5.0}
    sim = build_simulation(cfg)
    cluster, env = sim.cluster, sim.env
    weights = cluster.pools["default"].model.weight_bytes()
    bandwidth = 2e9
    cancel_at = 40.0  # loads began at 1 + 10 s provisioning = 11 s

    def script():
        yield env.timeout(1.0)
        cluster.apply([ScaleTo("default", 3)])
        yield env.timeout(cancel_at - 1.0)
        loading = [i for i in cluster.instances["default"] if i.state == LOADING]
        assert len(loading) == 2
        cluster.apply([Drain(loading[0].instance_id)])

    env.process(script())
    sim.run()
    ready = [e for e in sim.events if e["kind"] == "instance_ready"]
    assert len(ready) == 1
    left = weights - (cancel_at - 11.0) * bandwidth / 2
    expected = cancel_at + left / bandwidth + 5.0
    assert ready[0]["time"] == pytest.approx(expected)
