"""The instance engine on its own, with a simple linear iteration-time function.

Checks the claims instance.py makes: fast-forwarding stretches of decode iterations gives the
same results as stepping one iteration at a time, KV blocks balance, tokens are conserved, and
preemption (recompute or swap) loses no request.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import simpy

from chironsim.sim.config import EngineConfig
from chironsim.sim.instance import GROWTH, Instance, InstanceHost
from chironsim.sim.request import Request
from chironsim.workload.spec import RequestSpec


def linear_iteration_time(prefill_tokens, attention, decodes, context):
    """A made-up but roofline-shaped cost: fixed + per prefill token + per context token."""
    return (0.005 + 1e-5 * np.asarray(prefill_tokens) + 1e-9 * np.asarray(attention)
            + 1e-4 * np.asarray(decodes) + 1e-7 * np.asarray(context))


class RecordingHost(InstanceHost):
    def __init__(self) -> None:
        self.done: list[tuple[Request, str]] = []
        self.events: list[str] = []

    def request_done(self, req: Request, status: str, reason: str = "") -> None:
        self.done.append((req, status))

    def log_event(self, kind, inst, req, reason) -> None:
        self.events.append(kind.name)

    def instance_stopped(self, inst) -> None:
        self.events.append("stopped")


def simulate(fast_forward: bool, mode: str = "recompute", capacity: int = 400, n: int = 250,
             seed: int = 1, max_num_seqs: int = 64):
    env = simpy.Environment()
    host = RecordingHost()
    engine = EngineConfig(fast_forward=fast_forward, preemption_mode=mode,
                          max_num_seqs=max_num_seqs, max_num_batched_tokens=2048)
    inst = Instance(env, host, "i0", "pool", engine, linear_iteration_time, capacity, 200,
                    0.001, 10**6, 1)
    inst.start()
    rng = np.random.default_rng(seed)

    def arrivals():
        t = 0.0
        for i in range(n):
            t += rng.exponential(0.2)
            yield env.timeout(t - env.now)
            spec = RequestSpec(t, int(rng.integers(10, 800)), int(rng.integers(1, 400)))
            inst.enqueue(Request(i, spec, priority=int(rng.integers(0, 2))))

    env.process(arrivals())
    env.run(until=1e5)
    rows = sorted((r.request_id, s, r.first_token_time, r.finish_time, r.itl_max,
                   r.preemptions, r.generated) for r, s in host.done)
    return rows, inst, host


@pytest.mark.parametrize("mode", ["recompute", "swap"])
@pytest.mark.parametrize("seed", [1, 2])
def test_fast_forward_is_identical_to_stepping(mode: str, seed: int) -> None:
    fast, inst_fast, host_fast = simulate(True, mode, seed=seed)
    slow, inst_slow, _ = simulate(False, mode, seed=seed)
    assert fast == slow
    assert inst_fast.step == inst_slow.step
    assert inst_fast.busy_seconds == pytest.approx(inst_slow.busy_seconds, rel=1e-12)
    assert inst_fast.pure_decode_iterations == inst_slow.pure_decode_iterations
    assert inst_fast.pure_decode_seconds == pytest.approx(inst_slow.pure_decode_seconds,
                                                          rel=1e-12)
    assert 0 < inst_fast.pure_decode_iterations < inst_fast.decode_iterations
    # The comparison must have exercised preemption to mean anything.
    kinds = set(host_fast.events)
    assert ("swap_out" if mode == "swap" else "preempt") in kinds


@pytest.mark.parametrize("mode", ["recompute", "swap"])
def test_blocks_and_tokens_balance(mode: str) -> None:
    rows, inst, host = simulate(True, mode, capacity=300, seed=3)
    assert len(rows) == 250
    assert all(status == "finished" for _, status in host.done)
    for req, _ in host.done:
        assert req.generated == req.output_tokens
        assert req.first_token_time >= req.arrival
        assert req.finish_time >= req.first_token_time
        if req.output_tokens > 1:
            assert req.itl_max > 0
    inst.kv.check_invariants()
    assert inst.kv.free_blocks == inst.kv.capacity
    assert inst.kv.host_free_blocks == inst.kv.host_capacity
    assert inst.kv.owned(GROWTH) == 0
    assert inst.tokens_generated == sum(r.output_tokens for r, _ in host.done)


def lone_instance(capacity: int) -> tuple[simpy.Environment, RecordingHost, Instance]:
    """A started instance with the default engine, ``capacity`` KV blocks and no host memory."""
    env = simpy.Environment()
    host = RecordingHost()
    inst = Instance(env, host, "i0", "pool", EngineConfig(), linear_iteration_time, capacity, 0,
                    0.001, 10**6, 1)
    inst.start()
    return env, host, inst


def test_oversized_request_is_rejected_not_stuck() -> None:
    env, host, inst = lone_instance(10)
    inst.enqueue(Request(0, RequestSpec(0.0, 1000, 10), 0))
    env.run(until=10)
    assert [s for _, s in host.done] == ["rejected"]


def test_single_request_latency_is_bare_service_time() -> None:
    """One request alone: TTFT is one prefill iteration, then one decode iteration per token."""
    env, host, inst = lone_instance(1000)
    inst.enqueue(Request(0, RequestSpec(0.0, 100, 5), 0))
    env.run(until=10)
    req, status = host.done[0]
    assert status == "finished"
    prefill = float(linear_iteration_time(100, 100 * 50, 0, 0))
    assert req.first_token_time == pytest.approx(prefill)
    decode = [float(linear_iteration_time(0, 0, 1, 101 + i)) for i in range(4)]
    assert req.finish_time == pytest.approx(prefill + sum(decode))
    assert req.itl_max == pytest.approx(max(decode))
    assert math.isclose((req.finish_time - req.first_token_time) / 4, np.mean(decode))
    assert inst.decode_iterations == inst.pure_decode_iterations == 4
    assert inst.pure_decode_seconds == pytest.approx(sum(decode))


def test_pure_decode_counters_leave_out_iterations_with_a_prefill_chunk() -> None:
    """A second prompt arriving mid-decode shares one iteration with the first's decode:
    that iteration counts as a decode iteration but not as a pure one."""
    env, host, inst = lone_instance(1000)
    inst.enqueue(Request(0, RequestSpec(0.0, 100, 50), 0))

    def late():
        yield env.timeout(0.05)
        inst.enqueue(Request(1, RequestSpec(0.05, 200, 3), 0))

    env.process(late())
    env.run(until=10)
    assert [s for _, s in host.done] == ["finished", "finished"]
    assert inst.decode_iterations - inst.pure_decode_iterations == 1
    mixed = inst.decode_seconds - inst.pure_decode_seconds
    # that iteration ran the second prompt's whole prefill beside one decode
    assert mixed > float(linear_iteration_time(200, 0, 1, 100))
