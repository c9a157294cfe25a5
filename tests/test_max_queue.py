"""A pool's ``max_queue``: arrivals that would wait behind that many requests are rejected with
a reason, as a load balancer with a bounded backlog does; nothing else changes."""

from __future__ import annotations

import pytest

from chironsim.errors import ConfigError
from chironsim.experiments.config import parse_config
from chironsim.experiments.runner import run
from scenarios import build_simulation, fixed, single_server, synthetic

BURST = synthetic({"kind": "poisson", "rate": 40.0}, fixed(200), fixed(50), duration_s=5.0)


class WaitingSpy:
    """Records the most requests ever seen waiting at one instance (full views, every 10 ms)."""

    interval = 0.01

    def __init__(self) -> None:
        self.most = 0

    def on_tick(self, view):
        for pool in view.pools.values():
            for inst in pool.instances:
                self.most = max(self.most, inst.waiting)
        return []


def test_arrivals_past_the_bound_are_rejected_with_a_reason_and_the_rest_served():
    cfg = single_server([BURST], pool={"max_queue": 3})
    sim = build_simulation(cfg)
    spy = WaitingSpy()
    sim.autoscalers.append(spy)
    sim.run()
    records = list(sim.request_records)
    rejected = [r for r in records if r.status == "rejected"]
    finished = [r for r in records if r.status == "finished"]
    assert rejected and finished and len(rejected) + len(finished) == len(records) == sim.arrived
    assert spy.most <= 3
    result = run(cfg)
    rejects = result.events[result.events.kind == "reject"]
    assert len(rejects) == len(rejected) == result.summary.set_index("request_class").loc["all", "rejected"]
    assert rejects.reason.str.startswith("queue full: 3 waiting at default-0").all()


def test_without_a_bound_nothing_is_rejected_and_the_queue_grows():
    sim = build_simulation(single_server([BURST]))
    spy = WaitingSpy()
    sim.autoscalers.append(spy)
    sim.run()
    assert all(r.status == "finished" for r in sim.request_records)
    assert spy.most > 3


def test_the_pools_own_queue_is_bounded_while_no_instance_takes_requests():
    """A pool that starts empty holds arrivals in its own queue until its first instance is
    ready (Llumnix grows a pool when requests wait for it): at most max_queue of them."""
    cfg = single_server([synthetic({"kind": "poisson", "rate": 5.0}, fixed(100), fixed(10),
                                   duration_s=4.0)],
                        pool={"instances": 0, "min_instances": 0, "max_instances": 1,
                              "max_queue": 2},
                        policy={"kind": "llumnix"})
    cfg["cluster"]["lifecycle"] = {"provision_s": 30}
    result = run(cfg)
    status = result.requests.status.value_counts()
    assert status.get("finished", 0) == 2
    assert status.get("rejected", 0) == len(result.requests) - 2 > 0


@pytest.mark.parametrize("bad", [0, -1, 1.5, "many"])
def test_a_bad_bound_is_a_config_error_naming_the_key(bad):
    cfg = single_server([BURST], pool={"max_queue": bad})
    with pytest.raises(ConfigError, match=r"cluster\.pools\.default\.max_queue"):
        parse_config(cfg, "<test>", None)
