"""Llumnix's decision logic on crafted load reports: freeness, dispatch, pairing, scaling, config.

Every expected number is worked out by hand from the formulas in
``chironsim/policies/llumnix/freeness.py`` (the released code's, ``reference/llumnix_kunserve.md``
A.2.2), so a changed formula fails here rather than as a drifted experiment.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from chironsim.contract.load import LoadReport, RunningRequest, choose_request
from chironsim.contract.states import DRAINING, LOADING, PROVISIONING, READY
from chironsim.policies.llumnix.config import LlumnixPolicyConfig
from chironsim.policies.llumnix.dispatch import RoundRobin, freest, infaas_plus_plus
from chironsim.policies.llumnix.freeness import (
    dispatch_freeness,
    headroom_blocks,
    migration_freeness,
    pooled_dispatch_freeness,
)
from chironsim.policies.llumnix.pairing import (
    MigrateRunning,
    MoveWaiting,
    pair_migrations,
)
from chironsim.policies.llumnix.scaling import (
    ScaleDown,
    ScaleUp,
    ScalingState,
    scaling_decision,
)

_ids = iter(range(1, 10**9))


def req(priority: int = 0, tokens: int = 100, start: int = 0, movable: bool = True,
        request_id: int | None = None) -> RunningRequest:
    rid = next(_ids) if request_id is None else request_id
    return RunningRequest(rid, priority, tokens, -(-tokens // 16), start, movable)


def rep(name: str, *, free: int = 100, total: int = 200, watermark: int = 0, running: int = 0,
        requests: tuple[RunningRequest, ...] | None = None, waiting: int = 0,
        waiting_blocks: float = 0.0, hol: float = 0.0, preempted: int = 0, state: str = READY,
        out: int = 0, into: int = 0) -> LoadReport:
    """A report; ``running`` plain requests unless ``requests`` is given."""
    if requests is None:
        requests = tuple(req(start=i) for i in range(running))
    return LoadReport(name, "default", state, total, free, watermark, len(requests), waiting,
                      waiting_blocks, hol, preempted, out, into,
                      movable=sum(r.movable for r in requests),
                      running_priorities=tuple(sorted({r.priority for r in requests})))


# --- the report -------------------------------------------------------------------------------


def test_report_carries_counts_and_the_priorities_running():
    r = rep("a", requests=(req(0), req(0), req(2, movable=False)), waiting=3)
    assert (r.running, r.waiting, r.movable) == (3, 3, 2)
    assert r.running_priorities == (0, 2)
    assert rep("a", state=DRAINING).terminating and not rep("a", state=DRAINING).accepting
    with pytest.raises(AttributeError):
        r.free_blocks = 0  # frozen: a poll's report cannot be updated by a dispatch


# --- freeness ---------------------------------------------------------------------------------


def test_dispatch_freeness_charges_every_waiting_prompt_and_counts_every_request():
    # (free − watermark − Σ waiting prompt blocks) / (R + Q) = (100 − 2 − 10.5) / (3 + 2)
    r = rep("a", free=100, watermark=2, running=3, waiting=2, waiting_blocks=10.5, hol=4.0)
    assert dispatch_freeness(r) == pytest.approx(87.5 / 5)


def test_migration_freeness_charges_the_queue_head_as_one_more_request():
    # (free − watermark − head-of-line) / (R + [Q > 0]) = (100 − 2 − 4) / (3 + 1)
    r = rep("a", free=100, watermark=2, running=3, waiting=2, waiting_blocks=10.5, hol=4.0)
    assert migration_freeness(r) == pytest.approx(94 / 4)
    # no queue: no head, no extra request
    assert migration_freeness(rep("a", free=100, watermark=2, running=3)) == pytest.approx(98 / 3)
    # only a queue: the head is the one request
    assert migration_freeness(rep("a", free=50, waiting=5, hol=8.0)) == pytest.approx(42.0)


def test_freeness_goes_negative_under_overload():
    r = rep("a", free=3, watermark=2, running=2, waiting=1, waiting_blocks=9.0, hol=9.0)
    assert dispatch_freeness(r) == pytest.approx((3 - 2 - 9) / 3)
    assert migration_freeness(r) == pytest.approx((3 - 2 - 9) / 3)


def test_an_instance_holding_no_request_is_infinitely_free():
    r = rep("a", free=0, watermark=5)
    assert dispatch_freeness(r) == math.inf
    assert migration_freeness(r) == math.inf


def test_a_terminating_instance_reports_minus_infinity_even_when_empty():
    for r in (rep("a", state=DRAINING, running=2), rep("a", state=DRAINING)):
        assert dispatch_freeness(r) == -math.inf
        assert migration_freeness(r) == -math.inf


def test_priority_headroom_counts_once_per_priority_running_there():
    headroom = {0: 30, 1: 20, 7: 1000}  # priority 7 has no request here: not charged
    r = rep("a", free=200, requests=(req(0), req(0), req(1), req(5)))
    assert headroom_blocks(r, headroom) == 50
    assert dispatch_freeness(r, headroom) == pytest.approx((200 - 50) / 4)
    assert migration_freeness(r, headroom) == pytest.approx((200 - 50) / 4)
    # a third priority-0 request adds its physical blocks only (the report's free), never a
    # second headroom: Algorithm 1's shares headroom[p] / numRequests[p] sum to headroom[p]
    more = rep("a", free=200, requests=(req(0), req(0), req(0), req(1), req(5)))
    assert headroom_blocks(more, headroom) == 50


def test_headroom_is_not_charged_for_waiting_requests_or_in_agnostic_mode():
    r = rep("a", free=200, running=2, waiting=3, waiting_blocks=12.0)  # all priority 0
    assert headroom_blocks(r, {}) == 0
    assert dispatch_freeness(r, {}) == dispatch_freeness(r) == pytest.approx((200 - 12) / 5)
    assert headroom_blocks(rep("a", waiting=3), {0: 99}) == 0  # nothing running


def test_pooled_freeness_is_one_division_over_the_sums():
    a = rep("a", total=100, free=60, watermark=1, running=2)
    b = rep("b", total=100, free=90, watermark=1, running=1, waiting=1, waiting_blocks=5.0)
    assert pooled_dispatch_freeness([a, b]) == pytest.approx((150 - 2 - 5) / 4)
    # without b: b's blocks and watermark leave, its used 10 blocks come out of a's free
    assert pooled_dispatch_freeness([a, b], without=b) == pytest.approx((60 - 10 - 1 - 5) / 4)
    # without a: a's 40 used blocks come out of b's 90 free
    assert pooled_dispatch_freeness([a, b], without=a) == pytest.approx((90 - 40 - 1 - 5) / 4)
    # removed work that no longer fits floors the free blocks at zero (the code's max(0, ·))
    full = rep("c", total=100, free=0, running=4)
    assert pooled_dispatch_freeness([a, full], without=full) == pytest.approx((0 - 1) / 6)
    assert pooled_dispatch_freeness([rep("x"), rep("y")]) == math.inf
    assert pooled_dispatch_freeness([a, b], {0: 10}) == pytest.approx((150 - 2 - 5 - 20) / 4)


# --- dispatch ---------------------------------------------------------------------------------


def test_freest_picks_the_highest_dispatch_freeness_among_ready_instances():
    reports = [rep("a", free=100, running=4),                    # 25
               rep("b", free=100, running=2),                    # 50
               rep("c", free=900, running=1, state=DRAINING),    # terminating: never
               rep("d", free=900, state=PROVISIONING),           # not ready: never
               rep("e", free=100, running=2, waiting=2, waiting_blocks=40)]  # 15
    assert freest(reports) == "b"
    assert freest([rep("c", state=DRAINING, running=1)]) is None
    assert freest([]) is None


def test_freest_breaks_ties_by_instance_id_whatever_the_report_order():
    reports = [rep("c", running=2), rep("a", running=2), rep("b", running=2)]
    assert freest(reports) == freest(reports[::-1]) == "a"
    empties = [rep("z"), rep("m", running=1), rep("k")]  # two at +inf
    assert freest(empties) == "k"


def test_a_burst_between_two_polls_lands_on_one_instance():
    poll = [rep("a", free=100, running=4), rep("b", free=100, running=2),
            rep("c", free=100, running=3)]
    targets = {freest(poll) for _ in range(50)}  # 50 arrivals, no new poll
    assert targets == {"b"}
    # the next poll shows b loaded by the burst: dispatch moves on only then
    after = [poll[0], rep("b", free=20, running=2, waiting=50, waiting_blocks=60), poll[2]]
    assert freest(after) == "c"


def test_headroom_steers_llumnix_dispatch_but_not_infaas():
    hi = rep("hi", free=100, requests=(req(0),))             # (100 − 60) / 1 = 40 with headroom
    lo = rep("lo", free=100, requests=(req(5), req(5)))      # 50
    assert freest([hi, lo], {0: 60}) == "lo"
    assert infaas_plus_plus([hi, lo]) == "hi" == freest([hi, lo])


def test_round_robin_cycles_over_ready_instances_in_report_order():
    rr = RoundRobin()
    reports = [rep("a"), rep("x", state=DRAINING), rep("b"), rep("c", state=LOADING)]
    assert [rr.pick(reports) for _ in range(5)] == ["a", "b", "a", "b", "a"]
    assert rr.pick([rep("x", state=DRAINING)]) is None


# --- migration pairing ------------------------------------------------------------------------

T = 3.0


def pairs(decisions) -> list[tuple[str, str]]:
    return [(d.source, d.destination) for d in decisions if isinstance(d, MigrateRunning)]


def test_sources_most_loaded_first_pair_kth_with_kth_freest_destination():
    reports = [
        rep("s_mild", free=10, running=4),     # 2.5
        rep("d_free", free=200, running=2),    # 100
        rep("s_bad", free=2, running=4),       # 0.5
        rep("d_some", free=40, running=4),     # 10
        rep("mid", free=12, running=4),        # 3.0: at the threshold, neither side
        rep("s_worst", free=0, running=4, waiting=1, hol=4.0),  # -0.8
        rep("d_idle", free=50),                # +inf: freest of all
    ]
    decisions = pair_migrations(reports, threshold=T)
    assert pairs(decisions) == [("s_worst", "d_idle"), ("s_bad", "d_free"), ("s_mild", "d_some")]
    assert all(d.reason == "overloaded" for d in decisions)


def test_more_sources_than_destinations_leaves_the_least_loaded_sources_unpaired():
    reports = [rep("s1", free=1, running=4), rep("s2", free=2, running=4),
               rep("s3", free=3, running=4), rep("d", free=100, running=1)]
    decisions = pair_migrations(reports, threshold=T)
    assert pairs(decisions) == [("s1", "d")]


def test_preempted_requests_make_a_source_and_bar_a_destination():
    reports = [rep("p", free=100, running=2, preempted=1),   # free (50) yet a source
               rep("d", free=100, running=1),
               rep("q", free=500, running=1, preempted=2)]   # freest, but never a destination
    decisions = pair_migrations(reports, threshold=T)
    # both are sources; the more loaded (p: 50 < q: 500) goes first
    assert pairs(decisions) == [("p", "d")]
    assert decisions[0].reason == "preempted"


def test_exclude_rule_leaves_instances_with_a_migration_in_flight_out_before_pairing():
    reports = [rep("s_busy", free=0, running=4, out=1),      # most loaded, but already sending
               rep("s_next", free=4, running=4),
               rep("d_busy", free=900, running=1, into=1),   # freest, but already receiving
               rep("d_next", free=100, running=1)]
    decisions = pair_migrations(reports, threshold=T, busy="exclude")
    assert pairs(decisions) == [("s_next", "d_next")]
    # the limits are configurable: two at a time lets both in
    decisions = pair_migrations(reports, threshold=T, max_out=2, max_in=2, busy="exclude")
    assert pairs(decisions) == [("s_busy", "d_busy"), ("s_next", "d_next")]
    with pytest.raises(ValueError, match="unknown busy rule"):
        pair_migrations(reports, threshold=T, busy="ignore")  # type: ignore[arg-type]


def test_exclude_rule_a_source_with_nothing_movable_does_not_hold_a_destination():
    prefilling = tuple(req(start=i, movable=False) for i in range(4))
    reports = [rep("stuck", free=0, requests=prefilling), rep("s", free=4, running=4),
               rep("d", free=100, running=1)]
    assert pairs(pair_migrations(reports, threshold=T, busy="exclude")) == [("s", "d")]
    # the released rule pairs it anyway and nothing moves (migrate_out finds no request)
    assert pair_migrations(reports, threshold=T) == []


def test_a_terminating_instance_is_the_first_source_and_hands_over_its_waiting_requests():
    drain = rep("drain", free=150, running=2, waiting=3, state=DRAINING)
    reports = [rep("s", free=0, running=4), drain, rep("d1", free=100, running=1),
               rep("d2", free=50, running=1)]
    decisions = pair_migrations(reports, threshold=T)
    assert pairs(decisions) == [("drain", "d1"), ("s", "d2")]
    moved = [d for d in decisions if isinstance(d, MoveWaiting)]
    assert len(moved) == drain.waiting  # one hand-over per waiting request, head first
    assert {(d.source, d.destination, d.reason) for d in moved} == {("drain", "d1", "terminating")}
    first = decisions[0]
    assert isinstance(first, MigrateRunning) and first.reason == "terminating"


def test_a_terminating_instance_at_its_limit_still_hands_over_waiting_requests_only():
    drain = rep("drain", free=150, running=2, waiting=2, state=DRAINING, out=1)
    decisions = pair_migrations([drain, rep("d", free=100)], threshold=T)
    assert all(isinstance(d, MoveWaiting) for d in decisions) and len(decisions) == 2
    # with nothing waiting and its one migration in flight, it waits for the next poll
    drain = rep("drain", free=150, running=2, state=DRAINING, out=1)
    assert pair_migrations([drain, rep("d", free=100)], threshold=T) == []
    # and it is never a destination, nor is an empty drained instance a source
    assert pair_migrations([rep("s", free=0, running=4), rep("gone", state=DRAINING)],
                           threshold=T) == []


def test_request_choice_last_running_and_shortest_running():
    running = (req(tokens=900, start=1, request_id=11), req(tokens=50, start=2, request_id=12),
               req(tokens=400, start=3, request_id=13),
               req(tokens=10, start=4, request_id=14, movable=False))  # prefilling
    assert choose_request(running, "last_running").request_id == 13
    assert choose_request(running, "shortest_running").request_id == 12
    assert choose_request(running[3:], "last_running") is None
    with pytest.raises(ValueError, match="unknown request choice"):
        choose_request(running, "longest_running")  # type: ignore[arg-type]


def test_priority_aware_sources_give_up_their_lowest_priority_requests_first():
    running = (req(priority=0, tokens=50, start=5, request_id=21),
               req(priority=2, tokens=800, start=1, request_id=22),
               req(priority=2, tokens=300, start=2, request_id=23))
    assert choose_request(running, "shortest_running", low_priority_first=True).request_id == 23
    assert choose_request(running, "last_running", low_priority_first=True).request_id == 23
    assert choose_request(running, "shortest_running").request_id == 21


def test_headroom_turns_an_instance_with_a_high_priority_request_into_a_source():
    hi = rep("hi", free=40, requests=(req(0, start=1, request_id=31),
                                      req(5, start=2, request_id=32)))
    d = rep("d", free=100, running=1)
    assert pair_migrations([hi, d], threshold=T) == []  # 20
    decisions = pair_migrations([hi, d], threshold=T, headroom={0: 36})   # (40 − 36) / 2 = 2
    assert decisions == [MigrateRunning("hi", "d", "overloaded")]


@st.composite
def cluster(draw) -> list[LoadReport]:
    n = draw(st.integers(1, 7))
    next_id = 0
    reports = []
    for i in range(n):
        running = []
        for k in range(draw(st.integers(0, 5))):
            next_id += 1
            running.append(RunningRequest(next_id, draw(st.integers(0, 2)),
                                          draw(st.integers(1, 3000)), draw(st.integers(1, 200)),
                                          k, draw(st.booleans())))
        waiting = draw(st.integers(0, 3))
        total = draw(st.integers(50, 2000))
        hol = draw(st.floats(0, 100)) if waiting else 0.0
        reports.append(LoadReport(
            f"i{i}", "default", draw(st.sampled_from([READY, READY, READY, DRAINING, LOADING])),
            total, draw(st.integers(0, total)), draw(st.integers(0, 20)), len(running), waiting,
            hol + (draw(st.floats(0, 300)) if waiting else 0.0), hol,
            draw(st.integers(0, 2)) if draw(st.booleans()) else 0,
            draw(st.integers(0, 2)), draw(st.integers(0, 2)),
            movable=sum(r.movable for r in running),
            running_priorities=tuple(sorted({r.priority for r in running}))))
    return reports


@settings(max_examples=300, deadline=None)
@given(reports=cluster(), threshold=st.floats(0, 50),
       limits=st.tuples(st.integers(1, 2), st.integers(1, 2)),
       headroom=st.sampled_from([{}, {0: 40}, {0: 10, 1: 300}]),
       busy=st.sampled_from(["skip", "exclude"]), exclusive=st.booleans())
def test_pairing_invariants(reports, threshold, limits, headroom, busy, exclusive):
    max_out, max_in = limits
    rules = {"max_out": max_out, "max_in": max_in, "busy": busy, "exclusive": exclusive}
    decisions = pair_migrations(reports, threshold=threshold, headroom=headroom, **rules)
    by_id = {r.instance_id: r for r in reports}
    links = {(d.source, d.destination) for d in decisions}
    sources = [s for s, _ in links]
    destinations = [t for _, t in links]
    assert all(s != t for s, t in links)                     # never with itself
    assert len(set(sources)) == len(sources)                 # each instance sends to one place
    assert len(set(destinations)) == len(destinations)       # and receives from one
    assert not set(sources) & set(destinations)              # and is never both
    for s, t in links:
        src, dst = by_id[s], by_id[t]
        fs, ft = migration_freeness(src, headroom), migration_freeness(dst, headroom)
        assert dst.state == READY and dst.preempted == 0 and dst.migrations_in < max_in
        assert not (exclusive and dst.migrations_out)   # one flag per instance
        assert ft > threshold
        assert src.terminating or src.preempted > 0 or fs < threshold
        if not src.preempted:  # a preempted source may be freer than its destination
            assert fs < threshold < ft
    running_moves = [d for d in decisions if isinstance(d, MigrateRunning)]
    assert len({d.source for d in running_moves}) == len(running_moves)  # one request a pair
    for d in running_moves:
        src = by_id[d.source]
        assert src.migrations_out < max_out
        assert not (exclusive and src.migrations_in)
        assert src.movable > 0
    for source in {d.source for d in decisions if isinstance(d, MoveWaiting)}:
        assert by_id[source].terminating
        handed = sum(1 for d in decisions if isinstance(d, MoveWaiting) and d.source == source)
        assert handed == by_id[source].waiting
    # reading only the reports: the same poll gives the same decisions
    assert decisions == pair_migrations(reports, threshold=threshold, headroom=headroom, **rules)
    # the released rule never links more (source, destination) pairs than leaving busy
    # instances out does; a link may carry a running request or a draining instance's waiting
    # ones, so both kinds count (a waiting hand-over also occupies its destination for the poll)
    if busy == "skip":
        excluded = pair_migrations(reports, threshold=threshold, headroom=headroom,
                                   **{**rules, "busy": "exclude"})
        assert len(links) <= len({(d.source, d.destination) for d in excluded})


@settings(max_examples=200, deadline=None)
@given(reports=cluster(), headroom=st.sampled_from([{}, {0: 40}]))
def test_dispatch_picks_a_ready_instance_no_less_free_than_any_other(reports, headroom):
    chosen = freest(reports, headroom)
    ready = [r for r in reports if r.state == READY]
    if not ready:
        assert chosen is None
        return
    best = max(dispatch_freeness(r, headroom) for r in ready)
    pick = next(r for r in ready if r.instance_id == chosen)
    assert dispatch_freeness(pick, headroom) == best
    assert freest(list(reversed(reports)), headroom) == chosen  # order-free, deterministic


# --- scaling ----------------------------------------------------------------------------------


def check(reports, state=ScalingState(), **kw):
    kw.setdefault("up_threshold", 10.0)
    kw.setdefault("down_threshold", 60.0)
    return scaling_decision(reports, state, **kw)


def busy_pool() -> list[LoadReport]:
    # pooled: (Σfree 30 − Σwatermark 2 − Σ waiting 8) / (ΣR 4 + ΣQ 2) = 20 / 6 ≈ 3.3 < 10
    return [rep("a", free=10, watermark=1, running=2, waiting=2, waiting_blocks=8.0),
            rep("b", free=20, watermark=1, running=2)]


def idle_pool() -> list[LoadReport]:
    # pooled (150 + 199 + 180) / 5 ≈ 106; b runs the fewest requests
    return [rep("a", total=200, free=150, running=2), rep("b", total=200, free=199, running=1),
            rep("c", total=200, free=180, running=2)]


def test_scale_up_when_pooled_freeness_is_below_the_threshold():
    decision, state = check(busy_pool())
    assert decision == ScaleUp(pytest.approx(20 / 6))
    assert state == ScalingState()
    # at the pool's maximum: no decision, but the condition is remembered
    decision, state = check(busy_pool(), max_instances=2)
    assert decision is None and state.up_streak == 1


def test_scale_down_drains_the_instance_with_fewest_running_requests():
    decision, _ = check(idle_pool())
    # without b: its 1 used block comes out of a's and c's 330 free; R = 5
    assert decision == ScaleDown("b", pytest.approx((330 - 1) / 5))
    # pooled freeness with everything is (529) / 5 > 60 too, but not below 10: no scale-up
    assert pooled_dispatch_freeness(idle_pool()) > 60


def test_scale_down_needs_the_freeness_without_the_instance_above_the_threshold():
    pool = [rep("a", total=100, free=40, running=2), rep("b", total=100, free=60, running=1)]
    # with all: (100) / 3 = 33 — between thresholds; without b: (40 − 40) / 3 = 0
    assert check(pool) == (None, ScalingState())


def test_scale_down_ties_break_by_id_and_respect_the_minimum():
    pool = [rep("b", total=300, free=290, running=1), rep("a", total=300, free=290, running=1)]
    assert check(pool)[0] == ScaleDown("a", pytest.approx((290 - 10) / 2))
    decision, state = check(pool, min_instances=2)
    assert decision is None and state.down_streak == 1


def test_an_idle_pool_shrinks_and_an_empty_one_decides_nothing():
    assert check([rep("a"), rep("b")])[0] == ScaleDown("a", math.inf)
    assert check([]) == (None, ScalingState())
    assert check([rep("a", state=DRAINING, running=3)]) == (None, ScalingState())


def test_no_decision_while_an_instance_starts_and_no_second_drain_at_once():
    starting = busy_pool() + [rep("new", state=PROVISIONING)]
    assert check(starting, ScalingState(up_streak=4)) == (None, ScalingState())
    draining = idle_pool() + [rep("old", state=DRAINING, running=3)]
    decision, state = check(draining)
    assert decision is None and state.down_streak == 1
    # a drain does not block a scale-up: the terminating instance is left out of the pool
    assert isinstance(check(busy_pool() + [rep("old", state=DRAINING, running=3)])[0], ScaleUp)


def test_sustained_variant_waits_for_consecutive_checks():
    state = ScalingState()
    for expected_streak in (1, 2):
        decision, state = check(busy_pool(), state, sustain=3)
        assert decision is None and state == ScalingState(up_streak=expected_streak)
    decision, state = check(busy_pool(), state, sustain=3)
    assert isinstance(decision, ScaleUp) and state == ScalingState()
    # an interruption restarts the count
    _, state = check(busy_pool(), ScalingState(), sustain=2)
    _, state = check([rep("a", free=100, running=4), rep("b", free=100, running=4)], state,
                     sustain=2)  # 25: neither condition
    assert state == ScalingState()
    decision, state = check(busy_pool(), state, sustain=2)
    assert decision is None and state.up_streak == 1
    _, state = check(idle_pool(), ScalingState(up_streak=1), sustain=2)
    assert state == ScalingState(down_streak=1)  # the other condition does not carry over
    with pytest.raises(ValueError, match="sustain"):
        check(busy_pool(), sustain=0)


def test_normal_priority_freeness_ignores_the_headroom_that_all_priorities_charges():
    pool = [rep("a", total=100, free=50, requests=(req(0), req(5))),
            rep("b", total=100, free=50, requests=(req(0), req(5)))]      # pooled 100 / 4 = 25
    normal = LlumnixPolicyConfig(headroom_blocks={0: 40})
    every = LlumnixPolicyConfig(headroom_blocks={0: 40}, scaling_freeness="all_priorities")
    assert check(pool, headroom=normal.scaling_headroom())[0] is None
    assert check(pool, headroom=every.scaling_headroom())[0] == ScaleUp(pytest.approx(20 / 4))


# --- config -----------------------------------------------------------------------------------


def test_config_defaults_are_the_reference_values():
    cfg = LlumnixPolicyConfig()
    assert (cfg.poll_interval, cfg.migrate_out_threshold, cfg.scaling_interval) == (0.05, 3.0, 10.0)
    assert (cfg.scale_up_threshold, cfg.scale_down_threshold) == (10.0, 60.0)
    assert (cfg.max_migrations_out, cfg.max_migrations_in, cfg.scaling_sustain) == (1, 1, 1)
    assert cfg.dispatch == "llumnix" and cfg.migration and cfg.request_choice == "last_running"
    assert (cfg.busy_pairs, cfg.exclusive_migration) == ("skip", True)  # 37d8e5ea's flags
    assert cfg.tick_intervals() == {"poll_interval": 0.05, "scaling_interval": 10.0}


def test_config_headroom_modes():
    cfg = LlumnixPolicyConfig(headroom_blocks={"0": 300})  # YAML may give keys as text
    assert dict(cfg.headroom()) == {0: 300} and cfg.low_priority_first
    assert dict(cfg.scaling_headroom()) == {}
    base = LlumnixPolicyConfig(headroom_blocks={0: 300}, priority_agnostic=True,
                               scaling_freeness="all_priorities")
    assert dict(base.headroom()) == {} == dict(base.scaling_headroom())
    assert not base.low_priority_first


def test_config_ticks_follow_what_runs():
    rr = LlumnixPolicyConfig(dispatch="round_robin", migration=False, scaling=False)
    assert rr.tick_intervals() == {}
    infaas = LlumnixPolicyConfig(dispatch="infaas", migration=False, scaling=False)
    assert infaas.tick_intervals() == {"poll_interval": 0.05}


@pytest.mark.parametrize("bad", [
    {"poll_interval": 1e-6},
    {"poll_interval": 0},
    {"migrate_out_threshold": float("inf")},
    {"migrate_out_threshold": -1},
    {"scale_up_threshold": 60, "scale_down_threshold": 60},
    {"max_migrations_out": 0},
    {"scaling_sustain": 0},
    {"headroom_blocks": {0: -1}},
    {"headroom_blocks": {0: 10**9}},
    {"request_choice": "longest_running"},
    {"dispatch": "queue"},
    {"poll_intervall": 0.1},
    {"kind": "chiron"},
])
def test_config_rejects(bad):
    with pytest.raises(ValidationError):
        LlumnixPolicyConfig(**bad)


def test_a_pool_with_no_ready_instance_grows_by_one_when_requests_wait_for_it():
    """No ready instance, nothing to pool: queued work is demand no instance can take (the
    formula's limit, (0 − 0 − allq) / Q ≤ 0), so add one; nothing queued, nothing to do."""
    assert check([], queued=3) == (ScaleUp(-math.inf, 3), ScalingState())
    assert check([]) == (None, ScalingState())
    # the last instance draining: arrivals wait at the cluster, and the pool grows again
    assert check([rep("old", state=DRAINING, running=3)], queued=1)[0] == ScaleUp(-math.inf, 1)
    # a cold start under way is not doubled up; a pool capped at zero stays empty
    assert check([rep("new", state=PROVISIONING)], queued=5) == (None, ScalingState())
    assert check([], queued=5, max_instances=0) == (None, ScalingState())
    # the sustained variant counts these checks like any other scale-up condition
    decision, state = check([], queued=2, sustain=2)
    assert decision is None and state == ScalingState(up_streak=1)
    assert check([], state, queued=2, sustain=2)[0] == ScaleUp(-math.inf, 2)
    # with a ready instance, the freeness decides as before (queued is 0 whenever one is
    # ready: the routers place every arrival on a ready instance)
    assert check(busy_pool(), queued=0) == check(busy_pool())


def test_config_growable_pools_follow_the_scaler():
    assert LlumnixPolicyConfig().growable_pools(["a", "b"]) == {"a", "b"}
    assert LlumnixPolicyConfig(scaling=False).growable_pools(["a", "b"]) == set()
