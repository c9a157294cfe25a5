"""The HPA-style reactive autoscaler on hand-built cluster views."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from chironsim.errors import UnknownNameError
from chironsim.contract.actions import ScaleTo
from chironsim.contract.states import DRAINING, LOADING, PROVISIONING, READY
from chironsim.contract.views import ClusterView, InstanceView, PoolView
from chironsim.policies.reactive import ReactiveAutoscaler, ReactivePolicyConfig, measure

SEATS = 10


def inst(k: int, running: int = 0, waiting: int = 0, kv_used: int = 0, state: str = READY,
         pool: str = "p"):
    return InstanceView(
        instance_id=f"{pool}{k}", pool=pool, state=state, running=running, waiting=waiting,
        kv_used_blocks=kv_used, kv_capacity_blocks=100, max_num_seqs=SEATS, tokens_generated=0,
    )


def pool(running: list[int], pending: int = 0, queued: int = 0, name: str = "p",
         min_instances: int = 0, max_instances: int = 1_000_000) -> PoolView:
    """A pool whose ready instances run ``running[k]`` requests, plus ``pending`` provisioning."""
    ready = [inst(k, running=r, pool=name) for k, r in enumerate(running)]
    starting = [inst(len(running) + k, state=PROVISIONING, pool=name) for k in range(pending)]
    return PoolView(name=name, instances=tuple(ready + starting), queued=queued,
                    min_instances=min_instances, max_instances=max_instances)


def at(time: float, *pools: PoolView) -> ClusterView:
    return ClusterView(time=time, pools={p.name: p for p in pools})


def autoscaler(**overrides) -> ReactiveAutoscaler:
    settings = {"target": 0.5, "cooldown_s": 0.0, "scale_down_stabilization_s": 0.0}
    settings.update(overrides)
    return ReactiveAutoscaler(ReactivePolicyConfig(**settings))


# --- metrics -----------------------------------------------------------------------------


def test_metrics_are_measured_over_ready_instances_only():
    instances = (
        inst(0, running=6, waiting=2, kv_used=40),
        inst(1, running=2, waiting=0, kv_used=20),
        inst(2, running=9, waiting=9, kv_used=99, state=LOADING),
        inst(3, running=9, waiting=9, kv_used=99, state=DRAINING),
    )
    p = PoolView(name="p", instances=instances, queued=4)
    assert measure(p, "utilization") == pytest.approx(8 / 20)
    assert measure(p, "queue_length") == pytest.approx((2 + 0 + 4) / 2)
    assert measure(p, "kv_utilization") == pytest.approx((0.4 + 0.2) / 2)


def test_metrics_are_undefined_without_a_ready_instance():
    p = pool([], pending=2, queued=5)
    for metric in ("utilization", "queue_length", "kv_utilization"):
        assert measure(p, metric) is None


# --- the HPA rule ------------------------------------------------------------------------


def test_scales_up_to_ceil_of_ready_times_metric_over_target():
    # 2 ready, 15 of 20 seats busy: 2 × 0.75 / 0.5 = 3.
    actions = autoscaler().on_tick(at(0.0, pool([8, 7])))
    assert actions == [ScaleTo("p", 3, reason=actions[0].reason)]
    assert "utilization=0.75" in actions[0].reason and "target=0.5" in actions[0].reason
    # 3 ready, all 30 seats busy: 3 × 1.0 / 0.4 = 7.5 -> 8.
    actions = autoscaler(target=0.4).on_tick(at(0.0, pool([10, 10, 10])))
    assert [a.instances for a in actions] == [8]


def test_exact_ratios_do_not_round_up_on_float_noise():
    # 4 ready with 21 of 40 seats busy, target 0.35: exactly 6, but 6.000000000000001 in floats.
    actions = autoscaler(target=0.35).on_tick(at(0.0, pool([6, 5, 5, 5])))
    assert [a.instances for a in actions] == [6]


def test_holds_within_tolerance_and_acts_just_outside():
    # Ten ready instances of 10 seats; target 0.5 means 50 busy: ratio 1.0 holds.
    assert autoscaler().on_tick(at(0.0, pool([5] * 10))) == []
    # 54 busy of 100: ratio 1.08, within 10 %.
    assert autoscaler().on_tick(at(0.0, pool([6, 6, 6, 6, 5, 5, 5, 5, 5, 5]))) == []
    # 56 busy of 100: ratio 1.12, outside: ceil(10 × 1.12) = 12.
    assert [a.instances for a in autoscaler().on_tick(at(0.0, pool([6] * 6 + [5] * 4)))] == [12]
    # 45 busy: ratio 0.9 sits on the tolerance boundary and holds.
    assert autoscaler().on_tick(at(0.0, pool([5] * 5 + [4] * 5))) == []
    # 44 busy: ratio 0.88, outside: ceil(10 × 0.88) = 9.
    assert [a.instances for a in autoscaler().on_tick(at(0.0, pool([5] * 4 + [4] * 6)))] == [9]


def test_queue_length_metric_counts_the_pool_queue():
    # 2 ready with 3 + 1 waiting and 8 queued at the pool: 6 per instance, target 2 -> 6.
    p = PoolView(name="p", queued=8,
                 instances=(inst(0, running=10, waiting=3), inst(1, running=10, waiting=1)))
    actions = autoscaler(metric="queue_length", target=2.0).on_tick(at(0.0, p))
    assert [a.instances for a in actions] == [6]
    assert "queue_length=6" in actions[0].reason


def test_cooldown_blocks_actions_until_it_has_passed():
    scaler = autoscaler(cooldown_s=60.0)
    assert [a.instances for a in scaler.on_tick(at(0.0, pool([10, 10])))] == [4]
    hot = pool([10, 10, 10, 10])
    assert scaler.on_tick(at(15.0, hot)) == []
    assert scaler.on_tick(at(45.0, hot)) == []
    assert [a.instances for a in scaler.on_tick(at(60.0, hot))] == [8]


def test_capacity_still_starting_counts_and_is_not_ordered_twice():
    scaler = autoscaler()
    assert [a.instances for a in scaler.on_tick(at(0.0, pool([10, 10])))] == [4]
    # Two ordered instances are provisioning; load unchanged: desired 4 == active 4.
    assert scaler.on_tick(at(15.0, pool([10, 10], pending=2))) == []
    # More load on the two ready ones (still 100 %): desired stays 4, nothing new.
    assert scaler.on_tick(at(30.0, pool([10, 10], pending=2, queued=50))) == []
    # Load eases but stays above target (ratio 1.2): ceil(2 × 1.2) = 3 < 4 active. A scale-up
    # signal must not cancel capacity already on its way.
    assert scaler.on_tick(at(45.0, pool([6, 6], pending=2))) == []


def test_no_scale_down_on_a_zero_metric_while_nothing_is_ready():
    scaler = autoscaler(min_instances=0)
    assert scaler.on_tick(at(0.0, pool([], pending=3))) == []
    assert scaler.on_tick(at(15.0, pool([], pending=3, queued=20))) == []


def test_an_empty_pool_wakes_up_when_requests_queue():
    scaler = autoscaler(min_instances=0)
    assert scaler.on_tick(at(0.0, pool([]))) == []
    actions = scaler.on_tick(at(15.0, pool([], queued=3)))
    assert [a.instances for a in actions] == [1]
    assert "no ready instance" in actions[0].reason


def test_scale_down_waits_for_the_stabilisation_window():
    scaler = autoscaler(scale_down_stabilization_s=300.0)
    idle = pool([0, 0, 0, 0])
    for t in range(0, 300, 15):
        assert scaler.on_tick(at(float(t), idle)) == [], t
    assert [a.instances for a in scaler.on_tick(at(300.0, idle))] == [1]  # min_instances


def test_scale_down_takes_the_largest_recommendation_in_the_window():
    scaler = autoscaler(scale_down_stabilization_s=30.0, interval_s=10.0)
    # 8 ready × 10 seats, target 0.5: desired = ceil(busy / 5).
    assert scaler.on_tick(at(0.0, pool([4] * 6 + [3] * 2))) == []  # desired 6; 8 seeded at t=0
    assert scaler.on_tick(at(10.0, pool([3] * 8))) == []  # desired 5 (24 busy)
    assert scaler.on_tick(at(20.0, pool([2] * 7 + [1]))) == []  # desired 3 (15 busy)
    # t=30: the t=0 entries left the window; the largest left is 5 (from t=10).
    assert [a.instances for a in scaler.on_tick(at(30.0, pool([2] * 7 + [1])))] == [5]
    # t=40 with 5 ready, 15 busy of 50: desired 3, and the window (10, 40] holds 3, 3, 3.
    assert [a.instances for a in scaler.on_tick(at(40.0, pool([3] * 5)))] == [3]


def test_scale_up_stabilisation_takes_the_smallest_recommendation_in_the_window():
    scaler = autoscaler(scale_up_stabilization_s=30.0)
    hot = pool([10, 10])
    assert scaler.on_tick(at(0.0, hot)) == []  # history seeded with 2 at t=0
    assert scaler.on_tick(at(15.0, hot)) == []
    assert [a.instances for a in scaler.on_tick(at(30.0, hot))] == [4]


def test_a_short_spike_inside_the_up_window_does_not_scale():
    scaler = autoscaler(scale_up_stabilization_s=30.0)
    assert scaler.on_tick(at(0.0, pool([5, 5]))) == []
    assert scaler.on_tick(at(15.0, pool([10, 10]))) == []
    assert scaler.on_tick(at(30.0, pool([5, 5]))) == []
    assert scaler.on_tick(at(45.0, pool([10, 10]))) == []


def test_clamps_to_max_instances_and_max_step():
    assert [a.instances for a in autoscaler(max_instances=5).on_tick(
        at(0.0, pool([10, 10, 10])))] == [5]
    assert [a.instances for a in autoscaler(max_step=2).on_tick(
        at(0.0, pool([10, 10, 10])))] == [5]
    assert [a.instances for a in autoscaler(max_step=2).on_tick(
        at(0.0, pool([0] * 6)))] == [4]


def test_clamps_to_min_instances_and_bounds_win_over_max_step():
    assert [a.instances for a in autoscaler(min_instances=2).on_tick(
        at(0.0, pool([0] * 6)))] == [2]
    # One ready instance at the target but below the minimum of 3: raised to 3 in one step.
    assert [a.instances for a in autoscaler(min_instances=3, max_step=1).on_tick(
        at(0.0, pool([5])))] == [3]


def test_respects_the_pool_bounds_from_the_cluster():
    assert [a.instances for a in autoscaler().on_tick(
        at(0.0, pool([10, 10, 10], max_instances=4)))] == [4]
    assert autoscaler().on_tick(at(0.0, pool([10, 10, 10], max_instances=3))) == []


def test_scales_only_the_named_pools_and_rejects_unknown_ones():
    hot_a, hot_b = pool([10, 10], name="a"), pool([10, 10], name="b")
    actions = autoscaler(pools=["b"]).on_tick(at(0.0, hot_a, hot_b))
    assert [(a.pool, a.instances) for a in actions] == [("b", 4)]
    both = autoscaler().on_tick(at(0.0, hot_a, hot_b))
    assert [(a.pool, a.instances) for a in both] == [("a", 4), ("b", 4)]
    with pytest.raises(UnknownNameError, match="unknown pool 'c'"):
        autoscaler(pools=["c"]).on_tick(at(0.0, hot_a, hot_b))


def test_pools_keep_separate_cooldowns():
    scaler = autoscaler(cooldown_s=60.0)
    assert len(scaler.on_tick(at(0.0, pool([10, 10], name="a"), pool([5, 5], name="b")))) == 1
    actions = scaler.on_tick(at(15.0, pool([10, 10, 10, 10], name="a"), pool([10, 10], name="b")))
    assert [(a.pool, a.instances) for a in actions] == [("b", 4)]


def _random_views(seed: int, ticks: int):
    rng = np.random.default_rng(seed)
    size = 3
    for k in range(ticks):
        running = [int(x) for x in rng.integers(0, SEATS + 1, size=size)]
        yield at(15.0 * k, pool(running, pending=int(rng.integers(0, 2)),
                               queued=int(rng.integers(0, 10))))
        size = max(1, size + int(rng.integers(-1, 2)))


def test_same_views_give_the_same_actions():
    cfg = {"target": 0.6, "cooldown_s": 30.0, "scale_down_stabilization_s": 60.0, "max_step": 2}
    first = [autoscaler(**cfg).on_tick(v) for v in _random_views(3, 1)]
    a, b = autoscaler(**cfg), autoscaler(**cfg)
    run_a = [a.on_tick(v) for v in _random_views(3, 80)]
    run_b = [b.on_tick(v) for v in _random_views(3, 80)]
    assert run_a == run_b
    assert run_a[0] == first[0]
    assert sum(len(x) for x in run_a) > 3  # the sequence does exercise scaling


# --- config validation ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"target": 0.0}, "target"),
        ({"target": float("nan")}, "target"),
        ({"target": 1.5}, "target"),  # utilisation cannot exceed 1
        ({"metric": "kv_utilization", "target": 2.0}, "target"),
        ({"tolerance": 1.0}, "tolerance"),
        ({"tolerance": -0.1}, "tolerance"),
        ({"interval_s": 0.0}, "interval_s"),
        ({"scale_down_stabilization_s": -1.0}, "scale_down_stabilization_s"),
        ({"scale_up_stabilization_s": -1.0}, "scale_up_stabilization_s"),
        ({"cooldown_s": -5.0}, "cooldown_s"),
        ({"min_instances": -1}, "min_instances"),
        ({"max_instances": 0}, "max_instances"),
        ({"min_instances": 5, "max_instances": 3}, "min_instances"),
        ({"max_step": 0}, "max_step"),
        ({"pools": []}, "pools"),
        ({"pools": ["a", "a"]}, "pools"),
        ({"metric": "latency"}, "metric"),
        ({"targt": 0.5}, "targt"),
    ],
)
def test_invalid_settings_name_the_field(overrides, field):
    settings = {"target": 0.5}
    settings.update(overrides)
    with pytest.raises(ValidationError) as err:
        ReactivePolicyConfig(**settings)
    assert field in str(err.value)


def test_target_is_required_and_queue_targets_may_exceed_one():
    with pytest.raises(ValidationError, match="target"):
        ReactivePolicyConfig()
    assert ReactivePolicyConfig(metric="queue_length", target=4.0).target == 4.0


def test_defaults_are_the_documented_hpa_reconstructions():
    cfg = ReactivePolicyConfig(target=0.7)
    assert (cfg.metric, cfg.tolerance, cfg.interval_s) == ("utilization", 0.1, 15.0)
    assert (cfg.scale_up_stabilization_s, cfg.scale_down_stabilization_s) == (0.0, 300.0)
    assert (cfg.cooldown_s, cfg.min_instances, cfg.max_instances) == (60.0, 1, 64)
    assert cfg.max_step is None
    assert ReactiveAutoscaler(cfg).interval == 15.0


def test_history_is_bounded_by_the_longest_window():
    scaler = autoscaler(scale_down_stabilization_s=60.0, scale_up_stabilization_s=30.0)
    for k in range(200):
        scaler.on_tick(at(15.0 * k, pool([5, 5])))
    # Entries older than 60 s are dropped: at most the ticks in (now - 60, now].
    assert len(scaler._pools["p"].recommendations) <= 4
