"""Routers on hand-built instance views: choices, tie-breaks, cycling, reproducibility."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from chironsim.contract.protocols import Router
from chironsim.contract.states import READY
from chironsim.contract.views import InstanceView, RequestView
from chironsim.policies.routers import (
    KVAwareRouter,
    LeastOutstandingRouter,
    RandomRouter,
    RoundRobinRouter,
    RouterConfig,
    build_router,
)

REQUEST = RequestView(
    request_id=1, request_class="interactive", priority=0, prompt_tokens=100,
    output_tokens=50, arrival=0.0,
)


def inst(name: str, running: int = 0, waiting: int = 0, kv_used: int = 0, kv_cap: int = 100):
    return InstanceView(
        instance_id=name, pool="p", state=READY, running=running, waiting=waiting,
        kv_used_blocks=kv_used, kv_capacity_blocks=kv_cap, max_num_seqs=16, tokens_generated=0,
    )


def test_round_robin_cycles_in_candidate_order():
    router = RoundRobinRouter()
    cands = [inst("a"), inst("b"), inst("c")]
    assert [router.route(REQUEST, cands) for _ in range(7)] == list("abcabca")


def test_round_robin_keeps_cycling_when_the_pool_changes_size():
    router = RoundRobinRouter()
    three = [inst("a"), inst("b"), inst("c")]
    two = [inst("a"), inst("b")]
    assert router.route(REQUEST, three) == "a"
    assert router.route(REQUEST, three) == "b"
    assert router.route(REQUEST, two) == "a"  # counter 2 modulo 2
    assert router.route(REQUEST, two) == "b"
    assert router.route(REQUEST, [inst("z")]) == "z"


def test_least_outstanding_counts_running_and_waiting():
    router = LeastOutstandingRouter()
    cands = [inst("a", running=4), inst("b", running=1, waiting=3), inst("c", running=2, waiting=1)]
    assert router.route(REQUEST, cands) == "c"


def test_least_outstanding_breaks_ties_on_kv_then_order():
    router = LeastOutstandingRouter()
    cands = [inst("a", running=2, kv_used=50), inst("b", running=2, kv_used=20),
             inst("c", running=2, kv_used=20), inst("d", running=5, kv_used=0)]
    assert router.route(REQUEST, cands) == "b"
    level = [inst("a", running=1, kv_used=10), inst("b", running=1, kv_used=10)]
    assert router.route(REQUEST, level) == "a"


def test_least_outstanding_compares_kv_as_a_fraction_of_capacity():
    router = LeastOutstandingRouter()
    # 40/200 = 0.2 beats 30/100 = 0.3 although it uses more blocks.
    cands = [inst("small", running=1, kv_used=30, kv_cap=100),
             inst("big", running=1, kv_used=40, kv_cap=200)]
    assert router.route(REQUEST, cands) == "big"


def test_kv_aware_prefers_most_free_blocks():
    router = KVAwareRouter()
    cands = [inst("a", kv_used=90), inst("b", kv_used=10, kv_cap=50), inst("c", kv_used=30)]
    assert router.route(REQUEST, cands) == "c"  # free: 10, 40, 70


def test_kv_aware_breaks_ties_on_outstanding_then_order():
    router = KVAwareRouter()
    cands = [inst("a", running=4, kv_used=20), inst("b", running=1, waiting=1, kv_used=20),
             inst("c", running=2, kv_used=20)]
    assert router.route(REQUEST, cands) == "b"
    level = [inst("a", running=1, kv_used=20), inst("b", running=1, kv_used=20)]
    assert router.route(REQUEST, level) == "a"


def test_random_router_is_reproducible_and_stays_within_candidates():
    cands = [inst(name) for name in "abcd"]
    first = RandomRouter(np.random.default_rng(7))
    second = RandomRouter(np.random.default_rng(7))
    picks = [first.route(REQUEST, cands) for _ in range(200)]
    assert picks == [second.route(REQUEST, cands) for _ in range(200)]
    assert set(picks) == set("abcd")  # 200 uniform draws over 4 miss one with prob ~1e-25
    other = RandomRouter(np.random.default_rng(8))
    assert picks != [other.route(REQUEST, cands) for _ in range(200)]


@pytest.mark.parametrize(
    ("kind", "cls"),
    [("round_robin", RoundRobinRouter), ("least_outstanding", LeastOutstandingRouter),
     ("kv_aware", KVAwareRouter), ("random", RandomRouter)],
)
def test_build_router_returns_the_named_router(kind, cls):
    router = build_router(RouterConfig(kind=kind), np.random.default_rng(0))
    assert isinstance(router, cls)
    assert isinstance(router, Router)


def test_router_config_defaults_and_rejects_unknown_kind():
    assert RouterConfig().kind == "least_outstanding"
    with pytest.raises(ValidationError, match="kind"):
        RouterConfig(kind="fastest")
    with pytest.raises(ValidationError, match="weights"):
        RouterConfig(kind="random", weights=[1, 2])


def test_round_robin_routers_do_not_share_state():
    cands = [inst("a"), inst("b")]
    one, two = RoundRobinRouter(), RoundRobinRouter()
    assert one.route(REQUEST, cands) == "a"
    assert two.route(REQUEST, cands) == "a"


instance_loads = st.lists(
    st.tuples(st.integers(0, 6), st.integers(0, 3), st.integers(0, 8)), min_size=1, max_size=8
)


@settings(max_examples=150, deadline=None)
@given(instance_loads)
def test_single_pass_routers_match_a_sorted_reference(loads):
    cands = [inst(f"i{k}", running=r, waiting=w, kv_used=u, kv_cap=8)
             for k, (r, w, u) in enumerate(loads)]
    by_load = min(range(len(cands)),
                  key=lambda k: (cands[k].outstanding, cands[k].kv_utilization, k))
    by_kv = min(range(len(cands)),
                key=lambda k: (-cands[k].kv_free_blocks, cands[k].outstanding, k))
    assert LeastOutstandingRouter().route(REQUEST, cands) == cands[by_load].instance_id
    assert KVAwareRouter().route(REQUEST, cands) == cands[by_kv].instance_id


class CountingView:
    """Duck-typed view that counts the figures a router reads (a live view computes each
    one on the instance, so fewer reads is less work per arrival)."""

    def __init__(self, name: str, outstanding: int, kv_utilization: float, reads: list[str]):
        self.instance_id = name
        self._outstanding, self._kv, self._reads = outstanding, kv_utilization, reads

    @property
    def outstanding(self) -> int:
        self._reads.append(f"{self.instance_id}.outstanding")
        return self._outstanding

    @property
    def kv_utilization(self) -> float:
        self._reads.append(f"{self.instance_id}.kv")
        return self._kv


def test_least_outstanding_reads_kv_only_on_ties_and_stops_at_an_empty_instance():
    reads: list[str] = []
    cands = [CountingView("a", 3, 0.5, reads), CountingView("b", 1, 0.2, reads),
             CountingView("c", 2, 0.0, reads), CountingView("d", 0, 0.0, reads),
             CountingView("e", 0, 0.0, reads)]
    assert LeastOutstandingRouter().route(REQUEST, cands) == "d"
    assert "e.outstanding" not in reads  # nothing after an empty instance can beat it
    assert [r for r in reads if r.endswith(".kv")] == ["d.kv"]  # no tie before d: no KV read
    reads.clear()
    level = [CountingView("a", 1, 0.3, reads), CountingView("b", 1, 0.1, reads),
             CountingView("c", 2, 0.0, reads)]
    assert LeastOutstandingRouter().route(REQUEST, level) == "b"
    assert "c.kv" not in reads
    reads.clear()
    idle = [CountingView("a", 0, 0.0, reads), CountingView("b", 0, 0.0, reads)]
    assert LeastOutstandingRouter().route(REQUEST, idle) == "a"
    assert reads == ["a.outstanding", "a.kv"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3)), min_size=1, max_size=10))
def test_least_outstanding_with_many_empty_instances_matches_the_sorted_reference(loads):
    """Zeros are frequent here, so the early stop and the lazy KV read are exercised."""
    cands = [inst(f"i{k}", running=r, kv_used=u, kv_cap=4) for k, (r, u) in enumerate(loads)]
    expected = min(range(len(cands)),
                   key=lambda k: (cands[k].outstanding, cands[k].kv_utilization, k))
    assert LeastOutstandingRouter().route(REQUEST, cands) == cands[expected].instance_id
