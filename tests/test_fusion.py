"""Fused groups (issue 10 item 1, KunServe): drop, pipelined serving, restore and split.

The real cluster runs with a scripted policy issuing DropParameters / RestoreParameters at
given times (the harness of tests/test_migration.py). Requests decoding at the drop keep their
KV (exchanged live by default, or blocking), or recompute; restore converts them back.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chironsim.catalog import get_gpu, get_model
from chironsim.contract.actions import (DropParameters, RestoreParameters, SetMaxNumSeqs,
                                        action_problem)
from chironsim.contract.states import FUSED, READY
from chironsim.metrics.slo import RequestClassSpec
from chironsim.perf.comm import CommModel
from chironsim.perf.drop import fused_kv_capacity_blocks
from chironsim.perf.efficiency import comm_for_gpu
from chironsim.perf.exchange import kv_exchange_seconds, restore_seconds
from chironsim.perf.pipeline import hop_time, micro_batch_time, stage_layers, stage_times
from chironsim.perf.roofline import IterationTimeModel
from chironsim.policies.routers import RoundRobinRouter
from chironsim.sim.config import ClusterConfig, EngineConfig, FusionConfig, PoolConfig
from chironsim.sim.mechanisms.fusion import pipelined_iteration_time
from chironsim.sim.world import Simulation
from chironsim.workload.spec import RequestSpec
from test_migration import Script, events


class Watch(Script):
    """Scripted actions; also records every instance's (state, capacity) and audits blocks."""

    def __init__(self, actions, ref: list) -> None:
        super().__init__(actions)
        self.ref = ref
        self.seen: list[tuple[float, dict]] = []

    def on_tick(self, view):
        cluster = self.ref[0]
        owners: dict[int, str] = {}
        for inst in cluster.live_instances():
            inst.kv.check_invariants()
            for rid, req in inst.paused.items():  # paused: out of the batch, blocks kept here
                assert rid not in owners and inst.kv.owned(rid) > 0 and req.instance is inst
                owners[rid] = inst.instance_id
            for req in inst.running_requests():
                assert req.request_id not in owners
                owners[req.request_id] = inst.instance_id
                assert inst.kv.owned(req.request_id) > 0 or req.phase != "decoding"
        self.seen.append((view.time, {i.instance_id: (i.state, i.kv_capacity_blocks)
                                      for p in view.pools.values() for i in p.instances}))
        return super().on_tick(view)


def run(specs, actions, *, instances=2, model="llama-3-8b", gpu="a100-80gb", tp=1,
        fast_forward=True, max_num_seqs=16, small_kv: int | None = None, fusion=None):
    cluster = ClusterConfig(model=model, gpu=gpu,
                            engine=EngineConfig(fast_forward=fast_forward, max_num_seqs=max_num_seqs),
                            pools={"default": PoolConfig(instances=instances, tp=tp)},
                            fusion=FusionConfig(**(fusion or {})))
    ref: list = []
    watch = Watch(actions, ref)
    sim = Simulation(cluster, {"default": RequestClassSpec()}, iter(specs), RoundRobinRouter(),
                     [watch], duration_s=None, drain_s=600.0, sample_interval_s=1.0)
    ref.append(sim.cluster)
    if small_kv is not None:
        for inst in sim.cluster.live_instances():
            inst.kv.capacity = inst.kv.free_blocks = small_kv
            inst.kv.watermark = int(0.01 * small_kv)
    sim.run()
    return sim, watch


@pytest.mark.parametrize("model, gpu, tp", [("llama-3-8b", "a100-80gb", 1),
                                            ("llama-3-70b", "a100-80gb", 4)])
def test_capacity_after_a_drop_is_the_formula(model, gpu, tp):
    specs = [RequestSpec(0.01 * i, 300, 400) for i in range(6)]
    sim, watch = run(specs, [(0.5, DropParameters(("default-0", "default-1"), "test"))],
                     model=model, gpu=gpu, tp=tp)
    expected = fused_kv_capacity_blocks(get_model(model), get_gpu(gpu), tp, 2, 0.9, 16)
    drop = events(sim, "drop")
    assert len(drop) == 1 and f"->{expected}," in drop[0]["detail"]
    # between a follower's park and the leader's fuse the follower is fused, nothing resized
    fused = [s for t, s in watch.seen if t >= drop[0]["time"]]
    assert fused, "the group never formed"
    assert all(s["default-0"] == (READY, expected) and s["default-1"] == (FUSED, 0) for s in fused)
    assert {r.status for r in sim.request_records} == {"finished"}


def test_a_round_with_one_micro_batch_is_its_stage_times_plus_hops():
    model, gpu = get_model("llama-3-8b"), get_gpu("a100-80gb")
    timer = IterationTimeModel(model, gpu, 1)
    comm: CommModel = comm_for_gpu(gpu)
    layers = stage_layers(model.num_layers, 2)
    price = pipelined_iteration_time(timer, comm, 2)
    stages = stage_times(timer, layers, 0, 0.0, 1, 700)
    hop = hop_time(comm, 1, model.hidden_size)
    assert price(0, 0.0, 1, 700) == pytest.approx(sum(stages) + hop, rel=1e-12)
    assert price(0, 0.0, 1, 700) == micro_batch_time(timer, comm, layers, 0, 0.0, 1, 700)
    # two equal micro-batches on two stages: one micro-batch's latency or the busiest stage's
    # work for both (the last stage carries the LM head), whichever is longer
    two = price(0, 0.0, 2, 1400)
    assert two == pytest.approx(max(sum(stages) + hop, 2 * max(stages)), rel=1e-9)
    # unequal micro-batches cost at least the bigger one's latency (bubble included)
    assert price(0, 0.0, 3, 2100) >= float(micro_batch_time(timer, comm, layers, 0, 0.0, 2, 1400)) - 1e-15


@pytest.mark.parametrize("g", [2, 3])
def test_drop_then_restore_gives_back_g_instances_every_request_and_block(g):
    specs = [RequestSpec(0.05 * i, 200 + 97 * i, 50 + 13 * i) for i in range(30)]
    members = tuple(f"default-{k}" for k in range(g))
    sim, watch = run(specs, [(0.4, DropParameters(members, "overload")),
                             (2.0, RestoreParameters("default-0", "calm"))], instances=g)
    assert [e["kind"] for e in sim.events if e["kind"] in ("drop", "restore", "split")] == \
        ["drop", "restore", "split"]
    reload = restore_seconds(comm_for_gpu(get_gpu("a100-80gb")), get_model("llama-3-8b"), 1, g)
    restore, split = events(sim, "restore")[0], events(sim, "split")[0]
    assert split["time"] >= restore["time"] + reload - 1e-9
    assert sorted(r.request_id for r in sim.request_records) == list(range(len(specs)))
    assert {r.status for r in sim.request_records} == {"finished"}
    cluster = sim.cluster
    assert not cluster.fusion.groups
    original = cluster.pools["default"].kv_capacity_blocks
    for inst in cluster.live_instances():
        assert inst.state == READY and inst.kv.capacity == original
        assert inst.kv.used_blocks == 0 and inst.mechanisms == ()
        inst.kv.check_invariants()
    final = watch.seen[-1][1]
    assert all(v == (READY, original) for v in final.values())
    # followers served again after the split (the router places on every member)
    after = [r for r in sim.request_records if r.arrival > split["time"]]
    assert all(r.status == "finished" for r in after)


def test_actions_are_checked_against_the_view():
    sim, watch = run([RequestSpec(0.0, 100, 5)], [], instances=2)
    view = sim.cluster.view()
    assert action_problem(DropParameters(("default-0", "default-1")), view) is None
    assert "fewer than 2" in action_problem(DropParameters(("default-0",)), view)
    assert "twice" in action_problem(DropParameters(("default-0", "default-0")), view)
    assert "no instance" in action_problem(DropParameters(("default-0", "x")), view)
    assert action_problem(RestoreParameters("default-0"), view) is None
    assert action_problem(RestoreParameters("nope"), view) is not None


def test_fast_forward_gives_identical_tables_with_a_fused_group():
    specs = [RequestSpec(0.03 * i, 300 + 61 * i, 100 + 17 * i) for i in range(40)]
    actions = [(0.5, DropParameters(("default-0", "default-1"), "a")),
               (3.0, RestoreParameters("default-0", "b")),
               (6.0, DropParameters(("default-1", "default-2"), "c"))]
    runs = []
    for ff in (True, False):
        sim, _ = run(specs, actions, instances=3, fast_forward=ff)
        runs.append((list(sim.request_records), list(sim.events),
                     {c: h.to_dict() for c, h in sim.itl_recorder.by_class.items()}))
    assert len(events(sim, "drop")) == 2
    assert {e["reason"] for e in events(sim, "exchange")} == {"stale", "convert"}
    assert runs[0] == runs[1]



class Limits(Watch):
    """Also records every live instance's (state, running (paused included), max_num_seqs,
    token budget)."""

    def __init__(self, actions, ref: list) -> None:
        super().__init__(actions, ref)
        self.limits: list[tuple[float, dict]] = []

    def on_tick(self, view):
        self.limits.append((view.time, {
            i.instance_id: (i.state, len(i.decodes) + len(i.prefilling) + len(i.paused),
                            i.max_num_seqs, i.max_batched_tokens)
            for i in self.ref[0].live_instances()}))
        return super().on_tick(view)


def _limits_run(actions, seqs=4):
    """A pair with ``max_num_seqs`` = ``seqs`` fused at 0.05 s; 3 x ``seqs`` long decodes
    arrive after the fuse, all on the leader (the only ready member)."""
    specs = [RequestSpec(0.3 + 0.01 * i, 64 + i, 400 + 5 * i) for i in range(3 * seqs)]
    cluster = ClusterConfig(model="llama-3-8b", gpu="a100-80gb",
                            engine=EngineConfig(max_num_seqs=seqs),
                            pools={"default": PoolConfig(instances=2)})
    ref: list = []
    watch = Limits([(0.05, DropParameters(("default-0", "default-1"), "test")), *actions], ref)
    sim = Simulation(cluster, {"default": RequestClassSpec()}, iter(specs), RoundRobinRouter(),
                     [watch], duration_s=None, drain_s=600.0, sample_interval_s=1.0)
    ref.append(sim.cluster)
    sim.run()
    return sim, watch


def test_a_fused_pair_admits_twice_max_num_seqs_and_gets_its_limits_back_at_the_split():
    budget = EngineConfig().max_num_batched_tokens
    sim, watch = _limits_run([(2.0, RestoreParameters("default-0", "calm"))])
    drop, split = events(sim, "drop")[0], events(sim, "split")[0]
    fused = [s for t, s in watch.limits if drop["time"] < t < split["time"]]
    assert fused and all(s["default-0"][2:] == (8, 2 * budget) for s in fused)
    assert all(s["default-1"][2:] == (4, budget) for s in fused)  # a follower's own, untouched
    assert max(s["default-0"][1] for s in fused) == 8  # the group runs 2 x 4 sequences
    # and never more, even while converted requests are paused for their KV exchange
    assert events(sim, "exchange") and all(s["default-0"][1] <= 8 for s in fused)
    after = [s for t, s in watch.limits if t > split["time"]]
    assert after and all(s[i][2:] == (4, budget) for s in after for i in s)
    assert all(s[i][1] <= 4 for s in after for i in s)  # converted within each member's seats
    assert {r.status for r in sim.request_records} == {"finished"}
    for inst in sim.cluster.live_instances():
        assert (inst.max_num_seqs, inst.max_batched_tokens) == (4, budget)


def test_a_limit_changed_while_fused_is_the_groups_and_the_leader_keeps_its_share():
    # the group's 8 halved to 4 while fused: the leader's own 4 comes back halved, 2
    sim, watch = _limits_run([(1.0, SetMaxNumSeqs("default-0", 4, reason="halve")),
                              (2.0, RestoreParameters("default-0", "calm"))])
    split = events(sim, "split")[0]
    leader, follower = (sim.cluster.instance(i) for i in ("default-0", "default-1"))
    assert (leader.max_num_seqs, follower.max_num_seqs) == (2, 4)
    after = [s for t, s in watch.limits if t > split["time"]]
    assert after and all(s["default-0"][1] <= 2 for s in after)
    assert {r.status for r in sim.request_records} == {"finished"}


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_random_drops_and_restores_conserve_requests_and_blocks(data):
    n = data.draw(st.integers(2, 4), label="instances")
    specs = sorted((RequestSpec(data.draw(st.floats(0, 3)), data.draw(st.integers(16, 3000)),
                                data.draw(st.integers(1, 200)))
                    for _ in range(data.draw(st.integers(1, 25)))), key=lambda s: s.arrival)
    actions = []
    for _ in range(data.draw(st.integers(0, 6))):
        t = data.draw(st.floats(0, 6))
        if data.draw(st.booleans()):
            ids = data.draw(st.lists(st.integers(0, n - 1), min_size=2, max_size=n, unique=True))
            actions.append((t, DropParameters(tuple(f"default-{k}" for k in ids))))
        else:
            actions.append((t, RestoreParameters(f"default-{data.draw(st.integers(0, n - 1))}")))
    fusion = {"stale_requests": data.draw(st.sampled_from(["live", "blocking", "recompute"])),
              "exchange_batch_size": data.draw(st.integers(1, 8)),
              "restore_batch_size": data.draw(st.integers(1, 8))}
    sim, watch = run(specs, actions, instances=n, max_num_seqs=data.draw(st.integers(1, 8)),
                     small_kv=600, fusion=fusion)
    assert sorted(r.request_id for r in sim.request_records) == list(range(len(specs)))
    for rec in sim.request_records:
        assert rec.status in ("finished", "rejected")
    gaps = sum(max(rec.generated_tokens - 1, 0) for rec in sim.request_records)
    hist = sim.itl_recorder.by_class.get("default")
    assert (hist.count if hist else 0) == gaps, "every inter-token gap counted exactly once"
    if gaps:
        assert min(hist.counts) >= 0
        assert hist.maximum == max(rec.itl_max for rec in sim.request_records
                                   if rec.generated_tokens > 1)
    for inst in sim.cluster.live_instances():
        inst.kv.check_invariants()
        assert inst.kv.used_blocks == 0
    drops, splits = len(events(sim, "drop")), len(events(sim, "split"))
    assert splits <= drops and len(sim.cluster.fusion.groups) == drops - splits + sum(
        1 for g in sim.cluster.fusion.groups.values() if g.phase == "dropping")


# --- KV exchange and conversion (issue 10 item 1c) ----------------------------------------


def _detail(event) -> dict[str, str]:
    return dict(kv.split("=") for kv in event["detail"].split(";")[1:])


def _decoding_burst(n=20, prompt=64, output=1500):
    """Short prompts, long outputs: every request decodes by t = 0.5 s and still does at 3 s."""
    return [RequestSpec(0.01 * i, prompt + i, output + 7 * i) for i in range(n)]


def _exchange_seconds(tokens: int, g: int = 2, batch: int = 8) -> float:
    return float(kv_exchange_seconds(comm_for_gpu(get_gpu("a100-80gb")), get_model("llama-3-8b"),
                                     1, g, [tokens], batch_size=batch))


def test_live_exchange_steps_take_their_formula_and_keep_every_kv():
    specs = _decoding_burst()
    sim, _ = run(specs, [(0.5, DropParameters(("default-0", "default-1"), "overload"))])
    drop = events(sim, "drop")[0]
    steps = events(sim, "exchange")
    assert [int(_detail(e)["requests"]) for e in steps] == [8, 8, 4]
    assert all(e["reason"] == "stale" for e in steps)
    previous_landing = drop["time"]
    for e in steps:
        d = _detail(e)
        seconds, start = float(d["seconds"]), float(d["start"])
        assert seconds == pytest.approx(_exchange_seconds(int(d["tokens"])), rel=1e-12)
        assert e["time"] == pytest.approx(start + seconds, abs=1e-12)  # lands after its time
        assert start >= previous_landing - 1e-12  # one step in flight at a time
        previous_landing = e["time"]
    # nothing recomputed: every prompt prefilled once, every request finished
    prefilled = sum(r.tokens_prefilled for r in sim.cluster.instance_records)
    assert prefilled == sum(s.prompt_tokens for s in specs)
    assert {r.status for r in sim.request_records} == {"finished"}
    assert all(r.preemptions == 0 for r in sim.request_records)


def test_blocking_exchange_runs_before_the_first_round_and_recompute_reprefills():
    specs = _decoding_burst()
    blocking, _ = run(specs, [(0.5, DropParameters(("default-0", "default-1"), "o"))],
                      fusion={"stale_requests": "blocking"})
    drop = events(blocking, "drop")[0]
    steps = events(blocking, "exchange")
    assert [int(_detail(e)["requests"]) for e in steps] == [8, 8, 4]
    assert all(e["time"] == drop["time"] for e in steps)  # decided at the drop, not overlapped
    total = sum(float(_detail(e)["seconds"]) for e in steps)
    assert total == pytest.approx(sum(_exchange_seconds(int(_detail(e)["tokens"])) for e in steps))
    leader = next(r for r in blocking.cluster.instance_records if r.instance_id == "default-0")
    assert leader.busy_seconds > total
    per_action = run(specs, [(0.5, DropParameters(("default-0", "default-1"), "o",
                                                  stale_requests="recompute"))])[0]
    assert not events(per_action, "exchange")
    prefilled = sum(r.tokens_prefilled for r in per_action.cluster.instance_records)
    assert prefilled > sum(s.prompt_tokens for s in specs)  # the stale requests re-prefilled
    for sim in (blocking, per_action):
        assert {r.status for r in sim.request_records} == {"finished"}


def test_restore_converts_at_most_a_batch_per_step_after_the_reload_then_splits():
    specs = _decoding_burst()
    sim, watch = run(specs, [(0.5, DropParameters(("default-0", "default-1"), "overload")),
                             (3.0, RestoreParameters("default-0", "calm", batch_size=6))])
    restore, split = events(sim, "restore")[0], events(sim, "split")[0]
    reload = restore_seconds(comm_for_gpu(get_gpu("a100-80gb")), get_model("llama-3-8b"), 1, 2)
    assert f"{reload:.6g} s" in restore["detail"]
    converts = [e for e in events(sim, "exchange") if e["reason"] == "convert"]
    assert [int(_detail(e)["requests"]) for e in converts] == [6, 6, 6, 2]
    assert float(_detail(converts[0])["start"]) >= restore["time"] + reload - 1e-12
    for e in converts:
        d = _detail(e)
        assert float(d["seconds"]) == pytest.approx(_exchange_seconds(int(d["tokens"]), batch=6),
                                                    rel=1e-12)
    assert split["time"] >= converts[-1]["time"]
    assert "20 requests moved" not in split["detail"] and "0 placed again" in split["detail"]
    # converted requests decode on both members after the split, none recomputed
    prefilled = sum(r.tokens_prefilled for r in sim.cluster.instance_records)
    assert prefilled == sum(s.prompt_tokens for s in specs)
    last_hosts = {r.instances.split(";")[-1] for r in sim.request_records}
    assert last_hosts == {"default-0", "default-1"}
    assert {r.status for r in sim.request_records} == {"finished"}
    for inst in sim.cluster.live_instances():
        assert inst.state == READY and inst.kv.used_blocks == 0 and not inst.paused


def test_a_moved_block_is_never_lost_or_counted_twice():
    from chironsim.sim.allocator import AllocationError, KVBlockAllocator
    a, b = KVBlockAllocator(10, 1), KVBlockAllocator(6, 2)
    a.allocate("r", 5)
    b.allocate("x", 1)
    assert a.move_to(b, "r") == 5 and a.owned("r") == 0 and b.owned("r") == 5  # watermark used
    a.allocate("s", 9)
    with pytest.raises(AllocationError):
        a.move_to(b, "s")
    assert a.owned("s") == 9 and b.free_blocks == 0  # refused: nothing moved
    for alloc in (a, b):
        alloc.check_invariants()
