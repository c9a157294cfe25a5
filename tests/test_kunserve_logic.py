"""KunServe's decision logic (issue 10 item 2): config, usage window, drop and restore triggers
on crafted sample sequences, dispatch, and the drop plans."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from chironsim.policies.kunserve.config import KunServePolicyConfig
from chironsim.policies.kunserve.dispatch import pick_group
from chironsim.policies.kunserve.plan import greedy_drop_plan, static_groups
from chironsim.policies.kunserve.sample import UsageSample
from chironsim.policies.kunserve.triggers import (DropGroup, RestoreGroup, drop_decisions, group_triggers,
                                                  restore_decisions, votes_to_drop)
from chironsim.policies.kunserve.window import UsageWindow
from chironsim.sim.mechanisms.microbatch import pick_queue, rebalance_decodes

DEFAULT = KunServePolicyConfig()


def sample(usage_pct: int, pending: int = 10, free: int = 5, queued: int = 1, name: str = "i") -> UsageSample:
    """An instance of 100 blocks at `usage_pct` % usage."""
    return UsageSample(name, usage_pct, 100, free, pending, queued)


# --- config -----------------------------------------------------------------------------------

def test_defaults_are_the_released_codes():
    c = DEFAULT
    assert (c.group_size, c.usage_sample_interval, c.usage_window, c.drop_check_interval) == (2, 0.5, 15.0, 0.1)
    assert (c.drop_usage, c.restore_usage, c.trigger_scope) == (0.95, 0.5, "per_group")
    assert (c.exchange_batch_size, c.restore_batch_size, c.window_samples, c.min_votes) == (8, 8, 30, 1)
    assert KunServePolicyConfig(group_size=5).min_votes == 2
    assert c.tick_intervals() == {"usage_sample_interval": 0.5, "drop_check_interval": 0.1}


@pytest.mark.parametrize("bad", [{"group_size": 1}, {"group_size": 65}, {"drop_usage": float("inf")},
                                 {"restore_usage": 0.95}, {"usage_window": 0.1}, {"drop_check_interval": 1e-9},
                                 {"usage_sample_interval": 1e-3, "usage_window": 1000.0}, {"trigger_scope": "any"},
                                 {"exchange_batch_size": 0}, {"unknown_key": 1}, {"usage_window": float("nan")}])
def test_bad_settings_are_refused(bad):
    with pytest.raises(ValidationError):
        KunServePolicyConfig(**bad)


# --- usage window -----------------------------------------------------------------------------

def test_usage_is_falling_only_when_the_windowed_rates_sum_below_zero():
    w = UsageWindow(30)
    assert not w.falling
    for u in (0.9, 0.8, 0.7):
        w.push(u)
    assert w.falling
    w = UsageWindow(30)
    for u in (0.3, 0.4, 0.4):
        w.push(u)
    assert not w.falling
    w = UsageWindow(30)
    for _ in range(40):
        w.push(0.45)
    assert not w.falling  # flat is not falling


def reference_falling(usages: list[float], n: int) -> bool:
    """The released code's loop, written out: window of n, rate = (u − window[0]) / n after the push."""
    window, rates = [], []
    for u in usages:
        window = (window + [round(u * 1e6)])[-n:]
        rates = (rates + [window[-1] - window[0]])[-n:]
    return sum(rates) < 0


@settings(max_examples=200, deadline=None)
@given(usages=st.lists(st.floats(0, 3, allow_nan=False), max_size=120), n=st.integers(1, 35))
def test_window_matches_the_codes_loop(usages, n):
    w = UsageWindow(n)
    for u in usages:
        w.push(u)
    assert w.falling == reference_falling(usages, n)
    assert len(w) == min(n, len(usages))


# --- drop -------------------------------------------------------------------------------------

def test_a_member_votes_at_95_percent_with_queued_demand_at_least_free():
    assert votes_to_drop(sample(95), 0.95)
    assert not votes_to_drop(sample(94), 0.95)
    assert votes_to_drop(sample(95, pending=5, free=5), 0.95)
    assert not votes_to_drop(sample(99, pending=4, free=5), 0.95)
    assert votes_to_drop(sample(130, pending=40, free=0), 0.95)  # overload: demand above capacity


def test_a_group_needs_half_its_members_and_at_least_one():
    assert group_triggers([sample(96), sample(10)], 0.95)
    assert not group_triggers([sample(94), sample(94)], 0.95)
    assert not group_triggers([sample(96)], 0.95)  # a group of one cannot fuse
    four = [sample(96), sample(10), sample(10), sample(10)]
    assert not group_triggers(four, 0.95)
    four[1] = sample(97)
    assert group_triggers(four, 0.95)


def test_per_group_drops_only_the_overloaded_group_and_all_groups_drops_every_group():
    groups = {0: [sample(50), sample(60)], 1: [sample(96), sample(20)], 2: [sample(94), sample(94)], 3: [sample(99)]}
    assert drop_decisions(groups, DEFAULT) == [DropGroup(1)]
    every = KunServePolicyConfig(trigger_scope="all_groups")
    assert drop_decisions(groups, every) == [DropGroup(0), DropGroup(1), DropGroup(2)]
    quiet = {0: [sample(50), sample(60)], 2: [sample(94), sample(94)]}
    assert drop_decisions(quiet, DEFAULT) == [] and drop_decisions(quiet, every) == []


def test_a_sequence_of_checks_drops_at_the_first_overloaded_one():
    usage = [80, 90, 94, 94, 95, 97]
    fired = [bool(drop_decisions({7: [sample(u), sample(30)]}, DEFAULT)) for u in usage]
    assert fired == [False, False, False, False, True, True]


# --- restore ----------------------------------------------------------------------------------

def run_restore(usages: list[int], queued: list[int], config: KunServePolicyConfig = DEFAULT) -> list[bool]:
    """Sample a fused group's usage, check restore after each sample."""
    window, out = UsageWindow(config.window_samples), []
    for u, q in zip(usages, queued):
        window.push(u / 100)
        out.append(bool(restore_decisions({3: (sample(u, pending=0, free=100 - u, queued=q), window)}, config)))
    return out


def test_restore_only_when_no_queue_usage_at_most_half_and_falling():
    assert run_restore([70, 60, 50, 40], [0] * 4) == [False, False, True, True]
    assert run_restore([30, 40, 45, 50], [0] * 4) == [False] * 4  # low but rising
    assert run_restore([70, 60, 50, 40], [0, 0, 2, 0]) == [False, False, False, True]  # a queue blocks it
    assert run_restore([80, 70, 60, 55, 51], [0] * 5) == [False] * 5  # falling but above 50 %
    assert run_restore([70, 60, 50, 40], [0] * 4, KunServePolicyConfig(restore=False)) == [False] * 4


def test_restore_decisions_are_per_group_in_both_scopes():
    falling, rising = UsageWindow(30), UsageWindow(30)
    for u in (0.6, 0.4):
        falling.push(u)
    for u in (0.2, 0.4):
        rising.push(u)
    fused = {5: (sample(40, pending=0, queued=0), falling), 2: (sample(40, pending=0, queued=0), rising)}
    for scope in ("per_group", "all_groups"):
        assert restore_decisions(fused, KunServePolicyConfig(trigger_scope=scope)) == [RestoreGroup(5)]


# --- dispatch ---------------------------------------------------------------------------------

def test_dispatch_to_the_least_outstanding_group_then_the_emptiest_queue():
    assert pick_group({3: 5, 1: 2, 2: 2}) == 1
    assert pick_group({}) is None
    assert pick_queue([4, 1, 1]) == 1
    with pytest.raises(ValueError):
        pick_queue([])


@settings(max_examples=100, deadline=None)
@given(counts=st.lists(st.integers(0, 1000), min_size=1, max_size=8))
def test_decode_rebalance_moves_half_the_gap(counts):
    move = rebalance_decodes(counts)
    if max(counts) - min(counts) < 2:
        assert move is None
        return
    src, dst, n = move
    assert counts[src] == max(counts) and counts[dst] == min(counts) and n == (max(counts) - min(counts)) // 2
    after = list(counts)
    after[src] -= n
    after[dst] += n
    assert sum(after) == sum(counts) and abs(after[src] - after[dst]) <= 1


# --- plans ------------------------------------------------------------------------------------

def test_static_groups_are_consecutive_with_the_remainder_last():
    ids = [f"i{k}" for k in range(5)]
    assert static_groups(ids, 2) == [("i0", "i1"), ("i2", "i3"), ("i4",)]


def test_greedy_plan_forms_the_smallest_group_that_covers_each_need():
    gain = {2: 100, 3: 200, 4: 300}
    needs = {"a": 150, "b": 50, "c": 0}
    usage = {"c": 0.9, "d": 0.1, "e": 0.2, "f": 0.3, "g": 0.4}
    assert greedy_drop_plan(needs, usage, gain) == [("a", "d", "e"), ("b", "f")]
    # a need no group covers takes the largest group; partners are the least used first
    assert greedy_drop_plan({"a": 1000}, usage, gain) == [("a", "d", "e", "f")]


@settings(max_examples=100, deadline=None)
@given(needs=st.dictionaries(st.sampled_from("abcdefgh"), st.integers(-5, 500), max_size=8),
       spare=st.dictionaries(st.sampled_from("ijklmnop"), st.floats(0, 1), max_size=8))
def test_greedy_plan_never_reuses_an_instance(needs, spare):
    plan = greedy_drop_plan(needs, spare, {2: 100, 3: 200})
    members = [i for group in plan for i in group]
    assert len(members) == len(set(members))
    assert all(2 <= len(group) <= 3 and needs.get(group[0], 0) > 0 for group in plan)
    assert all(i in spare for group in plan for i in group[1:])
