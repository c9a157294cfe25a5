"""Chiron's router, local and global autoscalers and ablations, on hand-built views."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from pydantic import TypeAdapter, ValidationError

from chironsim.errors import UnknownNameError
from chironsim.contract.actions import ScaleTo, SetMaxNumSeqs
from chironsim.policies.chiron import (
    ChironGlobalAutoscaler,
    ChironLocalAutoscaler,
    ChironPolicyConfig,
    ChironRouter,
    build_chiron,
)
from chironsim.contract.states import PROVISIONING, READY
from chironsim.contract.views import ClusterView, InstanceView, PoolView, QueueView, RequestView
from chironsim.policies.registry import PolicyConfig, build_policy, parse_policy_config

CFG = ChironPolicyConfig()


def inst(iid: str, pool: str, *, interactive: int = 0, batch: int = 0, waiting: int = 0,
         kv: float = 0.0, seats: int = 64, tokens: int = 0, iterations: int = 0,
         seconds: float = 0.0, state: str = READY) -> InstanceView:
    by_class = tuple((c, n) for c, n in (("interactive", interactive), ("batch", batch)) if n)
    return InstanceView(
        instance_id=iid, pool=pool, state=state, running=interactive + batch, waiting=waiting,
        kv_used_blocks=int(round(kv * 1000)), kv_capacity_blocks=1000, max_num_seqs=seats,
        tokens_generated=tokens, decode_iterations=iterations, decode_seconds=seconds,
        running_by_class=by_class,
    )


def pool(name: str, *instances: InstanceView, lo: int = 0, hi: int = 1_000_000) -> PoolView:
    return PoolView(name=name, instances=tuple(instances), min_instances=lo, max_instances=hi)


def cluster(time: float, *pools: PoolView, queue: QueueView | None = None) -> ClusterView:
    return ClusterView(time=time, pools={p.name: p for p in pools},
                       queues={} if queue is None else {queue.request_class: queue})


def one(time: float, instance: InstanceView) -> ClusterView:
    return cluster(time, pool(instance.pool, instance))


def request(cls: str = "interactive") -> RequestView:
    return RequestView(request_id=1, request_class=cls, priority=0, prompt_tokens=100,
                       output_tokens=50, arrival=0.0)


# --- config and bundle ---------------------------------------------------------------------


def test_config_rejects_inconsistent_settings():
    with pytest.raises(ValidationError, match="ibp_low"):
        ChironPolicyConfig(ibp_low=0.7, ibp_high=0.6)
    with pytest.raises(ValidationError, match="itl_slo has no target for class 'batch'"):
        ChironPolicyConfig(itl_slo={"interactive": 0.05})
    with pytest.raises(ValidationError, match="must differ"):
        ChironPolicyConfig(mixed_pool="interactive")
    with pytest.raises(ValidationError, match="b_max_other"):
        ChironPolicyConfig(b_min=1024)
    with pytest.raises(ValidationError, match="positive finite"):
        ChironPolicyConfig(itl_slo={"interactive": 0.05, "batch": -1.0})
    with pytest.raises(ValidationError, match="extra"):
        ChironPolicyConfig(global_=False)


def test_chiron_is_registered_and_in_the_policy_union():
    cfg = parse_policy_config({"kind": "chiron", "mixed": False, "z": 2.33})
    assert isinstance(cfg, ChironPolicyConfig) and not cfg.mixed and cfg.z == 2.33
    assert isinstance(TypeAdapter(PolicyConfig).validate_python({"kind": "chiron"}),
                      ChironPolicyConfig)
    bundle = build_policy(cfg, np.random.default_rng(0))
    assert bundle.name == "chiron" and bundle.queued_classes == frozenset({"batch"})


def test_bundle_wires_router_autoscalers_and_the_queued_batch_class():
    bundle = build_chiron(ChironPolicyConfig(batch_class="bulk",
                                             itl_slo={"interactive": 0.05, "bulk": 1.0}),
                          np.random.default_rng(0))
    assert isinstance(bundle.router, ChironRouter)
    local, global_ = bundle.autoscalers
    assert isinstance(local, ChironLocalAutoscaler) and local.interval == 1.0
    assert isinstance(global_, ChironGlobalAutoscaler) and global_.interval == 5.0
    assert bundle.queued_classes == frozenset({"bulk"})


@pytest.mark.parametrize(("flags", "kinds"), [
    ({"local": False}, [ChironGlobalAutoscaler]),
    ({"global_scaling": False}, [ChironLocalAutoscaler]),
    ({"local": False, "global_scaling": False}, []),
])
def test_ablation_flags_remove_the_autoscalers(flags, kinds):
    bundle = build_chiron(ChironPolicyConfig(**flags), np.random.default_rng(0))
    assert [type(a) for a in bundle.autoscalers] == kinds


# --- router --------------------------------------------------------------------------------


def test_interactive_goes_to_the_least_loaded_interactive_instance_with_capacity():
    candidates = [
        inst("i0", "interactive", interactive=64),               # no free seat
        inst("i1", "interactive", interactive=30, kv=0.5),
        inst("i2", "interactive", interactive=10, kv=0.75),      # KV above the threshold
        inst("i3", "interactive", interactive=20, waiting=5, kv=0.3),
        inst("m0", "mixed"),
    ]
    assert ChironRouter(CFG).route(request(), candidates) == "i3"


def test_interactive_overflows_to_the_mixed_instance_with_least_interactive_load():
    candidates = [
        inst("i0", "interactive", interactive=60, waiting=4),    # full: 64 outstanding
        inst("i1", "interactive", interactive=5, kv=0.7),        # KV at the threshold
        inst("m0", "mixed", interactive=6),
        inst("m1", "mixed", interactive=1, batch=50),            # batch work is evictable
    ]
    assert ChironRouter(CFG).route(request(), candidates) == "m1"


def test_a_mixed_instance_full_of_interactive_work_is_only_a_last_resort():
    candidates = [
        inst("i0", "interactive", interactive=64, waiting=2),    # full
        inst("m0", "mixed", interactive=64, waiting=3),          # full, nothing to evict
        inst("i1", "interactive", interactive=64),               # full, least outstanding
    ]
    assert ChironRouter(CFG).route(request(), candidates) == "i1"
    candidates.append(inst("m1", "mixed", interactive=30, batch=34, waiting=5))
    assert ChironRouter(CFG).route(request(), candidates) == "m1"   # batch work to evict


def test_interactive_without_mixed_candidates_goes_to_the_least_loaded_interactive():
    candidates = [inst("i0", "interactive", interactive=64, waiting=3),
                  inst("i1", "interactive", interactive=64)]
    assert ChironRouter(CFG).route(request(), candidates) == "i1"


def test_mixed_ablation_keeps_interactive_off_mixed_instances():
    candidates = [inst("i0", "interactive", interactive=64, waiting=3),
                  inst("i1", "interactive", interactive=64), inst("m0", "mixed")]
    assert ChironRouter(ChironPolicyConfig(mixed=False)).route(request(), candidates) == "i1"
    assert ChironRouter(CFG).route(request(), candidates) == "m0"


def test_other_classes_prefer_their_own_pool_then_least_outstanding():
    candidates = [inst("i0", "interactive"), inst("x0", "other", interactive=9),
                  inst("x1", "other", interactive=3), inst("m0", "mixed", batch=1)]
    router = ChironRouter(CFG)
    assert router.route(request("other"), candidates) == "x1"
    assert router.route(request("batch"), candidates) == "i0"  # no batch-pool candidate
    assert router.route(request("batch"), candidates + [inst("b0", "batch", batch=99)]) == "b0"


# --- local autoscaler ----------------------------------------------------------------------


class LocalLoop:
    """Drives the local autoscaler on one instance, applying its actions like the cluster."""

    def __init__(self, instance: InstanceView, cfg: ChironPolicyConfig = CFG,
                 saturated: bool = False) -> None:
        self.scaler = ChironLocalAutoscaler(cfg)
        self.inst = instance
        self.time = 0.0
        # Saturated: demand exceeds any limit, so the instance always runs max_num_seqs.
        self.saturated = saturated

    def tick(self, itl: float | None = None, tokens: int = 0,
             pure_itl: float | None = None) -> list[SetMaxNumSeqs]:
        """Advance one second with ``tokens`` generated at inter-token latency ``itl``; with
        ``pure_itl``, 8 of the 10 iterations ran no prefill chunk and took ``pure_itl`` each
        (the other two make up the mean ``itl``), else all 10 did."""
        if self.time > 0:
            iterations = 0 if itl is None else 10
            pure = iterations if pure_itl is None else 8
            pure_seconds = pure * (itl or 0.0) if pure_itl is None else pure * pure_itl
            self.inst = replace(
                self.inst, tokens_generated=self.inst.tokens_generated + tokens,
                decode_iterations=self.inst.decode_iterations + iterations,
                decode_seconds=self.inst.decode_seconds + iterations * (itl or 0.0),
                pure_decode_iterations=self.inst.pure_decode_iterations + pure,
                pure_decode_seconds=self.inst.pure_decode_seconds + pure_seconds)
        actions = self.scaler.on_tick(one(self.time, self.inst))
        for action in actions:
            assert action.instance_id == self.inst.instance_id
            self.inst = replace(self.inst, max_num_seqs=action.max_num_seqs)
            if self.saturated:
                (cls, _), = self.inst.running_by_class
                self.inst = replace(self.inst, running=action.max_num_seqs,
                                    running_by_class=((cls, action.max_num_seqs),))
        self.time += 1.0
        return actions


def test_itl_above_the_slo_halves_the_batch_limit():
    loop = LocalLoop(inst("i0", "interactive", interactive=40, seats=64))
    assert loop.tick() == []  # first sight: a baseline, limit already within bounds
    [action] = loop.tick(itl=0.08, tokens=400)
    assert action.max_num_seqs == 32 and "halve" in action.reason
    [action] = loop.tick(itl=0.08, tokens=400)
    assert action.max_num_seqs == 16


@pytest.mark.parametrize(("signal", "halves"), [("all", True), ("pure_decode", False)])
def test_the_itl_signal_chooses_whether_prefill_stalls_count(signal, halves):
    """Mean ITL 0.08 s, but the iterations without a prefill chunk take 0.02 s: only the
    prefill chunks push it over the 0.05 s target, and a smaller batch would not fix them."""
    loop = LocalLoop(inst("i0", "interactive", interactive=40, seats=64),
                     ChironPolicyConfig(itl_signal=signal))
    loop.tick()
    actions = loop.tick(itl=0.08, tokens=400, pure_itl=0.02)
    assert [a.max_num_seqs for a in actions] == ([32] if halves else [])
    # Pure-decode iterations over the target halve under either signal.
    assert [a.max_num_seqs for a in loop.tick(itl=0.2, tokens=400, pure_itl=0.15)] == \
        ([16] if halves else [32])


def test_halving_stops_at_b_min():
    loop = LocalLoop(inst("i0", "interactive", interactive=2, seats=3),
                     ChironPolicyConfig(b_min=2))
    loop.tick()
    assert [a.max_num_seqs for a in loop.tick(itl=0.2, tokens=20)] == [2]
    assert loop.tick(itl=0.2, tokens=20) == []


def test_itl_is_smoothed_by_the_ewma():
    loop = LocalLoop(inst("i0", "interactive", interactive=64, seats=64))
    loop.tick()
    loop.tick(itl=0.03, tokens=400)            # ewma 0.03; first window within target: probe
    assert loop.inst.max_num_seqs == 128
    assert loop.tick(itl=0.09, tokens=400) == []   # 0.3·0.09 + 0.7·0.03 = 0.048 ≤ 0.05
    [action] = loop.tick(itl=0.09, tokens=400)     # 0.3·0.09 + 0.7·0.048 = 0.0606
    assert action.max_num_seqs == 64


def test_rising_throughput_doubles_and_saturated_throughput_holds():
    loop = LocalLoop(inst("b0", "batch", batch=256, seats=256), saturated=True)
    loop.tick()
    assert [a.max_num_seqs for a in loop.tick(itl=0.2, tokens=1000)] == [512]   # probe
    assert [a.max_num_seqs for a in loop.tick(itl=0.2, tokens=1100)] == [1024]  # +10 %
    assert loop.tick(itl=0.2, tokens=1120) == []     # +1.8 % over 1100: the knee, hold
    assert loop.tick(itl=0.2, tokens=1150) == []     # +4.5 %: still within epsilon
    assert [a.max_num_seqs for a in loop.tick(itl=0.2, tokens=1160)] == [2048]  # +5.5 %


def test_batch_instances_reach_b_max_batch_and_others_stop_at_b_max_other():
    limits = {}
    for pool_name in ("batch", "interactive", "mixed"):
        loop = LocalLoop(inst("x", pool_name, batch=8, seats=8), saturated=True)
        loop.tick()
        tokens = 1000
        for _ in range(20):
            tokens = int(tokens * 1.5)
            loop.tick(itl=0.1, tokens=tokens)   # within the batch ITL target, always gaining
        limits[pool_name] = loop.inst.max_num_seqs
    assert limits == {"batch": 4096, "interactive": 512, "mixed": 512}


def test_the_strictest_running_class_sets_the_target():
    mixed_both = LocalLoop(inst("m0", "mixed", interactive=5, batch=20, seats=64))
    mixed_both.tick()
    assert [a.max_num_seqs for a in mixed_both.tick(itl=0.1, tokens=300)] == [32]
    batch_only = LocalLoop(inst("m1", "mixed", batch=64, seats=64))
    batch_only.tick()
    assert [a.max_num_seqs for a in batch_only.tick(itl=0.1, tokens=300)] == [128]


def test_after_a_halving_the_limit_is_probed_up_again_not_stuck_at_the_floor():
    """Under steady load a halved limit cannot out-earn the larger one it replaced, so the
    throughput test alone would hold it at the floor forever; after ``probe_holdoff_s`` the
    limit is probed upward again."""
    loop = LocalLoop(inst("b0", "batch", batch=256, seats=256),
                     ChironPolicyConfig(probe_holdoff_s=3.0), saturated=True)
    loop.tick()
    assert [a.max_num_seqs for a in loop.tick(itl=0.6, tokens=1000)] == [128]  # over 0.5 s
    for _ in range(15):                  # EWMA 0.3·0.2 + 0.7·0.6 = 0.48: within the target
        loop.tick(itl=0.2, tokens=600)
        if loop.inst.max_num_seqs > 128:
            break
    assert loop.inst.max_num_seqs == 256
    assert loop.time - 2.0 >= 3.0        # not before the hold-off


def test_a_limit_that_does_not_bind_is_not_raised():
    loop = LocalLoop(inst("i0", "interactive", interactive=10, seats=64))
    loop.tick()
    assert loop.tick(itl=0.01, tokens=400) == []         # 10 running of 64 seats: hold
    waiting = LocalLoop(inst("i1", "interactive", interactive=10, waiting=3, seats=64))
    waiting.tick()
    assert [a.max_num_seqs for a in waiting.tick(itl=0.01, tokens=400)] == [128]


def test_no_decode_or_no_running_request_means_no_change():
    idle = LocalLoop(inst("i0", "interactive", seats=64))
    idle.tick()
    assert idle.tick(itl=0.5, tokens=100) == []     # nothing running: no target
    stalled = LocalLoop(inst("i1", "interactive", interactive=3, seats=64))
    stalled.tick()
    assert stalled.tick(itl=None) == []             # no decode iteration in the window


def test_first_sight_applies_b_start_within_the_pool_ceiling_and_state_is_forgotten():
    scaler = ChironLocalAutoscaler(ChironPolicyConfig(b_start=1024))
    both = cluster(0.0, pool("interactive", inst("i0", "interactive", seats=64)),
                   pool("batch", inst("b0", "batch", seats=64)))
    assert {(a.instance_id, a.max_num_seqs) for a in scaler.on_tick(both)} == {
        ("i0", 512), ("b0", 1024)}
    # i0 leaves; when an instance with its id comes back it is new again.
    assert scaler.on_tick(cluster(1.0, pool("batch", inst("b0", "batch", seats=1024)))) == []
    back = scaler.on_tick(cluster(2.0, pool("interactive", inst("i0", "interactive", seats=64))))
    assert [(a.instance_id, a.max_num_seqs) for a in back] == [("i0", 512)]


# --- global autoscaler: interactive and mixed ----------------------------------------------


def pressed(iid: str, pool_name: str = "interactive") -> InstanceView:
    return inst(iid, pool_name, interactive=60, seats=64)


def calm(iid: str, pool_name: str = "interactive") -> InstanceView:
    return inst(iid, pool_name, interactive=5, seats=64)


def chiron_view(time: float, interactive: list[InstanceView], mixed: list[InstanceView],
                batch: list[InstanceView] = (), queue: QueueView | None = None,
                **bounds) -> ClusterView:
    return cluster(time, pool("interactive", *interactive), pool("mixed", *mixed),
                   pool("batch", *batch, lo=bounds.get("batch_lo", 0),
                        hi=bounds.get("batch_hi", 1_000_000)), queue=queue)


def scale_of(actions: list[ScaleTo], pool_name: str) -> int | None:
    found = [a.instances for a in actions if a.pool == pool_name]
    assert len(found) <= 1
    return found[0] if found else None


def test_pressed_means_near_the_limit_or_with_work_waiting():
    scaler = ChironGlobalAutoscaler(CFG)
    assert scaler.pressed(inst("a", "interactive", interactive=58, seats=64))   # 0.906
    assert not scaler.pressed(inst("a", "interactive", interactive=57, seats=64))  # 0.891
    assert scaler.pressed(inst("a", "interactive", interactive=3, waiting=1, seats=64))
    assert not scaler.pressed(inst("a", "mixed", batch=64, waiting=2, seats=64))


@pytest.mark.parametrize("enabled", [False, True])
def test_itl_backpressure_presses_instances_whose_itl_exceeds_the_target(enabled):
    """Two interactive instances far from their limit, nothing waiting: only the ITL over the
    last global interval (0.08 s against 0.05 s) can press them, and only with the option."""
    scaler = ChironGlobalAutoscaler(ChironPolicyConfig(itl_backpressure=enabled))

    def at(time: float, iterations: int, seconds: float) -> ClusterView:
        busy = [inst(f"i{k}", "interactive", interactive=20, seats=64, iterations=iterations,
                     seconds=seconds) for k in range(2)]
        return chiron_view(time, busy, [calm("m0", "mixed")])

    assert scale_of(scaler.on_tick(at(0.0, 100, 3.0)), "interactive") is None  # first sight
    actions = scaler.on_tick(at(5.0, 160, 7.8))       # 60 iterations in 4.8 s: 0.08 s each
    assert scale_of(actions, "interactive") == (3 if enabled else None)
    # A window within the target (60 iterations in 1.8 s) presses nothing again.
    assert scale_of(scaler.on_tick(at(10.0, 220, 9.6)), "interactive") is None


def test_backpressure_above_ibp_high_adds_an_interactive_instance():
    scaler = ChironGlobalAutoscaler(CFG)
    view = chiron_view(0.0, [pressed("i0"), pressed("i1")], [calm("m0", "mixed")])
    assert scaler.backpressure(view.pools["interactive"], view.pools["mixed"]) == \
        pytest.approx(2 / 3)
    actions = scaler.on_tick(view)
    assert scale_of(actions, "interactive") == 3 and "backpressure=0.667" in actions[0].reason
    assert scale_of(actions, "mixed") is None          # ceil(0.25 × 3) = 1 already


def test_at_ibp_high_or_with_starting_capacity_nothing_is_added():
    scaler = ChironGlobalAutoscaler(CFG)
    # 3 of 5 = 0.6 is not above 0.6.
    view = chiron_view(0.0, [pressed("i0"), pressed("i1"), calm("i2"), calm("i3")],
                       [pressed("m0", "mixed")])
    assert scale_of(scaler.on_tick(view), "interactive") is None
    # 2 pressed of 2 ready plus 2 starting: 0.5.
    starting = [inst(f"s{k}", "interactive", state=PROVISIONING) for k in range(2)]
    view = chiron_view(5.0, [pressed("i0"), *starting], [pressed("m0", "mixed")])
    assert scale_of(scaler.on_tick(view), "interactive") is None


def test_low_backpressure_removes_one_instance_only_after_the_delay_each_time():
    scaler = ChironGlobalAutoscaler(CFG)
    three = [calm("i0"), calm("i1"), calm("i2")]
    mixed = [calm("m0", "mixed")]
    for t in (0.0, 30.0, 55.0):
        assert scale_of(scaler.on_tick(chiron_view(t, three, mixed)), "interactive") is None
    assert scale_of(scaler.on_tick(chiron_view(60.0, three, mixed)), "interactive") == 2
    two = three[:2]
    assert scale_of(scaler.on_tick(chiron_view(65.0, two, mixed)), "interactive") is None
    assert scale_of(scaler.on_tick(chiron_view(115.0, two, mixed)), "interactive") is None
    assert scale_of(scaler.on_tick(chiron_view(120.0, two, mixed)), "interactive") == 1
    one_left = three[:1]
    assert scale_of(scaler.on_tick(chiron_view(300.0, one_left, mixed)), "interactive") is None


def test_moderate_backpressure_resets_the_scale_down_timer():
    scaler = ChironGlobalAutoscaler(CFG)
    low = [calm("i0"), calm("i1"), calm("i2")]
    mid = [pressed("i0"), pressed("i1"), calm("i2")]  # 2 of 4 = 0.5: between the thresholds
    mixed = [calm("m0", "mixed")]
    scaler.on_tick(chiron_view(0.0, low, mixed))
    scaler.on_tick(chiron_view(30.0, mid, mixed))
    assert scale_of(scaler.on_tick(chiron_view(35.0, low, mixed)), "interactive") is None
    assert scale_of(scaler.on_tick(chiron_view(90.0, low, mixed)), "interactive") is None
    assert scale_of(scaler.on_tick(chiron_view(95.0, low, mixed)), "interactive") == 2


def test_mixed_pool_is_kept_at_mixed_fraction_of_interactive_and_at_least_one():
    scaler = ChironGlobalAutoscaler(CFG)
    mid = [pressed("i0"), pressed("i1")] + [calm(f"i{k}") for k in range(2, 7)]
    actions = scaler.on_tick(chiron_view(0.0, mid, []))   # 2 of 7 pressed: no change
    assert scale_of(actions, "interactive") is None
    assert scale_of(actions, "mixed") == 2                # ceil(0.25 × 7)
    hot = [pressed(f"i{k}") for k in range(8)]
    actions = scaler.on_tick(chiron_view(5.0, hot, [calm("m0", "mixed")]))
    assert scale_of(actions, "interactive") == 9
    assert scale_of(actions, "mixed") == 3                # follows this tick's target
    actions = scaler.on_tick(chiron_view(10.0, [calm("i0")], [calm("m0", "mixed"),
                                                              calm("m1", "mixed")]))
    assert scale_of(actions, "mixed") == 1
    # Even an interactive pool scaled to nothing keeps one mixed instance.
    empty = ChironGlobalAutoscaler(ChironPolicyConfig(min_interactive=0))
    assert scale_of(empty.on_tick(chiron_view(15.0, [], [])), "mixed") == 1


def test_mixed_ablation_keeps_the_mixed_pool_empty():
    scaler = ChironGlobalAutoscaler(ChironPolicyConfig(mixed=False))
    view = chiron_view(0.0, [pressed(f"i{k}") for k in range(8)], [calm("m0", "mixed")])
    assert scale_of(scaler.on_tick(view), "mixed") == 0
    assert scale_of(scaler.on_tick(chiron_view(5.0, [pressed("i0")], [])), "mixed") is None


def test_missing_pools_are_named():
    with pytest.raises(UnknownNameError, match="unknown pool 'batch'"):
        ChironGlobalAutoscaler(CFG).on_tick(cluster(0.0, pool("interactive"), pool("mixed")))
    with pytest.raises(UnknownNameError, match="unknown pool 'mixed'"):
        ChironGlobalAutoscaler(CFG).on_tick(cluster(0.0, pool("interactive"), pool("batch")))
    no_mixed = ChironGlobalAutoscaler(ChironPolicyConfig(mixed=False))
    assert no_mixed.on_tick(cluster(0.0, pool("interactive", calm("i0")), pool("batch"))) == []


# --- global autoscaler: batch --------------------------------------------------------------


def batch_queue(q: int, mean: float, std: float, deadline: float) -> QueueView:
    return QueueView("batch", length=q, remaining_tokens_mean=mean, remaining_tokens_std=std,
                     earliest_deadline=deadline, oldest_arrival=0.0)


def measured_tick(scaler: ChironGlobalAutoscaler, queue: QueueView, mixed_tokens: int = 4000,
                  **bounds) -> list[ScaleTo]:
    """Three ticks 5 s apart (the first window is warm-up): batch instances then make 5000
    tokens each per window (1000 tok/s), the mixed instance ``mixed_tokens`` with 3 of its 4
    running requests batch."""
    def view(t: float, k: int) -> ClusterView:
        batch = [inst(f"b{j}", "batch", batch=200, seats=256, tokens=k * 5000) for j in range(2)]
        mixed = [inst("m0", "mixed", interactive=10, batch=30, tokens=k * mixed_tokens)]
        return chiron_view(t, [calm("i0"), calm("i1"), calm("i2")], mixed, batch,
                           queue=queue, **bounds)
    scaler.on_tick(view(990.0, 0))
    scaler.on_tick(view(995.0, 1))
    return scaler.on_tick(view(1000.0, 2))


def test_long_queue_with_a_near_deadline_adds_batch_instances_per_the_bound():
    q, mu, sigma, now, cold = 20_000, 200.0, 150.0, 1000.0, 60.0
    queue = batch_queue(q, mu, sigma, deadline=now + 1060.0)
    actions = measured_tick(ChironGlobalAutoscaler(CFG), queue)
    theta_mixed = 800.0 * 30 / 40
    theta = 2 * 1000.0 + theta_mixed
    work = q * mu + 1.64 * math.sqrt(q) * sigma
    horizon = 1060.0 - cold
    assert work / theta > horizon                                  # W ≈ 1552 s > 1000 s
    expected = math.ceil((work / horizon - theta_mixed) / 1000.0)
    assert expected == 4
    assert scale_of(actions, "batch") == expected
    [batch_action] = [a for a in actions if a.pool == "batch"]
    assert "q=20000" in batch_action.reason and "Theta=2600" in batch_action.reason


def test_the_z_term_of_the_bound_can_decide_the_scale_up():
    # q·μ/Θ = 769.2 s fits in the 775 s horizon; z·√q·σ/Θ = 9.5 s more does not.
    queue = batch_queue(10_000, 200.0, 150.0, deadline=1000.0 + 775.0 + 60.0)
    actions = measured_tick(ChironGlobalAutoscaler(CFG), queue)
    work = 10_000 * 200.0 + 1.64 * 100 * 150.0
    assert scale_of(actions, "batch") == math.ceil((work / 775.0 - 600.0) / 1000.0) == 3
    no_z = measured_tick(ChironGlobalAutoscaler(ChironPolicyConfig(z=0.0)), queue)
    assert scale_of(no_z, "batch") is None


def test_with_z_zero_and_no_mixed_the_count_is_the_plain_formula():
    cfg = ChironPolicyConfig(z=0.0, mixed=False)
    q, mu = 30_000, 100.0
    queue = batch_queue(q, mu, 80.0, deadline=1000.0 + 660.0)
    scaler = ChironGlobalAutoscaler(cfg)

    def view(t: float, k: int) -> ClusterView:
        batch = [inst(f"b{j}", "batch", batch=200, seats=256, tokens=k * 5000) for j in range(2)]
        return chiron_view(t, [calm("i0")], [], batch, queue=queue)
    for k, t in enumerate((990.0, 995.0)):
        scaler.on_tick(view(t, k))
    actions = scaler.on_tick(view(1000.0, 2))
    assert scale_of(actions, "batch") == math.ceil(q * mu / (1000.0 * 600.0)) == 5


def test_a_far_deadline_adds_nothing():
    queue = batch_queue(20_000, 200.0, 150.0, deadline=1000.0 + 3600.0)
    assert scale_of(measured_tick(ChironGlobalAutoscaler(CFG), queue), "batch") is None


def test_the_warm_up_window_of_a_new_instance_is_not_a_measurement():
    # b0 is first seen at t=0; its window (0, 5] is warm-up at a crawling 10 tok/s, so the
    # fallback 500 tok/s stands: W = 300000 / 500 = 600 s fits in the 640 s horizon.
    cfg = ChironPolicyConfig(z=0.0, mixed=False, batch_instance_throughput_tokens_s=500.0)
    queue = batch_queue(1000, 300.0, 0.0, deadline=700.0)
    scaler = ChironGlobalAutoscaler(cfg)

    def view(t: float, tokens: int) -> ClusterView:
        return chiron_view(t, [calm("i0")], [], [inst("b0", "batch", batch=256, seats=256,
                                                      tokens=tokens)], queue=queue)
    assert scale_of(scaler.on_tick(view(0.0, 0)), "batch") is None
    assert scale_of(scaler.on_tick(view(5.0, 50)), "batch") is None
    # The next window is measured: 100 tok/s, W = 3000 s > 630 s -> ceil(300000/630/100) = 5.
    assert scale_of(scaler.on_tick(view(10.0, 550)), "batch") == 5


def test_without_measurements_the_fallback_throughput_is_used():
    cfg = ChironPolicyConfig(z=0.0, batch_instance_throughput_tokens_s=500.0)
    queue = batch_queue(1000, 300.0, 0.0, deadline=100.0 + 160.0)
    view = chiron_view(100.0, [calm("i0")], [inst("m0", "mixed", interactive=4, seats=64)],
                       [inst("b0", "batch", seats=256)], queue=queue)
    actions = ChironGlobalAutoscaler(cfg).on_tick(view)
    # W = 300000 / 500 = 600 s > 100 s; the mixed instance runs no batch work: Θ_mixed = 0.
    assert scale_of(actions, "batch") == math.ceil(300_000 / 100.0 / 500.0) == 6


def test_no_time_left_scales_to_the_maximum_but_not_beyond_the_queue():
    cfg = ChironPolicyConfig(max_batch_instances=7)
    late = batch_queue(1000, 200.0, 100.0, deadline=1000.0 + 30.0)
    assert scale_of(measured_tick(ChironGlobalAutoscaler(cfg), late), "batch") == 7
    assert scale_of(measured_tick(ChironGlobalAutoscaler(CFG), late, batch_hi=5), "batch") == 5
    tiny = batch_queue(3, 200.0, 100.0, deadline=1000.0 + 30.0)
    assert scale_of(measured_tick(ChironGlobalAutoscaler(cfg), tiny), "batch") == 3


def test_an_empty_queue_scales_the_batch_pool_to_zero_once_its_work_is_done():
    scaler = ChironGlobalAutoscaler(CFG)
    busy = [inst("b0", "batch", batch=10, seats=256), inst("b1", "batch", seats=256)]
    assert scale_of(scaler.on_tick(chiron_view(0.0, [calm("i0")], [calm("m0", "mixed")],
                                               busy)), "batch") is None
    idle = [inst("b0", "batch", seats=256), inst("b1", "batch", seats=256),
            inst("b2", "batch", state=PROVISIONING)]
    empty = batch_queue(0, 0.0, 0.0, deadline=math.inf)
    actions = scaler.on_tick(chiron_view(5.0, [calm("i0")], [calm("m0", "mixed")], idle, empty))
    assert scale_of(actions, "batch") == 0
    floor = chiron_view(10.0, [calm("i0")], [calm("m0", "mixed")], idle, batch_lo=1)
    assert scale_of(scaler.on_tick(floor), "batch") == 1


def test_a_queue_with_no_batch_capable_instance_gets_one_even_without_deadline():
    cfg = ChironPolicyConfig(mixed=False)
    queue = batch_queue(50, 100.0, 10.0, deadline=math.inf)
    actions = ChironGlobalAutoscaler(cfg).on_tick(chiron_view(0.0, [calm("i0")], [], [],
                                                              queue=queue))
    assert scale_of(actions, "batch") == 1
    with_mixed = chiron_view(0.0, [calm("i0")], [calm("m0", "mixed")], [], queue=queue)
    assert scale_of(ChironGlobalAutoscaler(CFG).on_tick(with_mixed), "batch") is None
