"""The public Instance API mechanisms use: detach, adopt, reserve/commit/cancel.

A mechanism written here, outside the engine, plugs in at iteration boundaries through
``Instance.mechanisms`` and moves a request between two instances with the public API only.
"""

from __future__ import annotations

import simpy

from chironsim.sim import request as rq
from chironsim.sim.config import EngineConfig
from chironsim.sim.instance import GROWTH, Instance
from chironsim.sim.request import Request
from chironsim.workload.spec import RequestSpec
from test_instance import RecordingHost, linear_iteration_time


class MoveOnce:
    """Detach ``req`` at the first boundary where it is in ``phase`` and adopt it on ``dst``."""

    def __init__(self, req: Request, phase: str, dst: Instance, save_kv: bool = True) -> None:
        self.req, self.phase, self.dst, self.save_kv = req, phase, dst, save_kv
        self.saved: int | None = None

    def at_boundary(self, inst: Instance, step: int) -> float:
        if self.saved is None and self.req.phase == self.phase and self.req.instance is inst:
            self.saved = inst.detach(self.req, save_kv=self.save_kv)
            self.dst.adopt(self.req)
        return 0.0


def pair(max_num_seqs: int = 256, fast_forward: bool = True):
    env = simpy.Environment()
    host = RecordingHost()
    engine = EngineConfig(max_num_seqs=max_num_seqs, fast_forward=fast_forward)
    a, b = (Instance(env, host, f"i{k}", "pool", engine, linear_iteration_time, 400, 200,
                     0.001, 10**6, 1) for k in range(2))
    a.start()
    b.start()
    return env, host, a, b


def _check_empty(*instances: Instance) -> None:
    for inst in instances:
        inst.kv.check_invariants()
        assert inst.kv.free_blocks == inst.kv.capacity
        assert inst.kv.host_free_blocks == inst.kv.host_capacity
        assert inst.kv.owned(GROWTH) == 0
        assert inst.pending_blocks == 0


def test_a_decoding_request_moves_with_its_kv_and_finishes_without_recompute():
    env, host, a, b = pair()
    req = Request(0, RequestSpec(0.0, 300, 50), priority=0)
    a.mechanisms = (MoveOnce(req, rq.DECODING, b),)
    a.enqueue(req)
    env.run(until=100)
    assert [(r.request_id, s) for r, s in host.done] == [(0, "finished")]
    assert req.generated == req.output_tokens
    assert a.mechanisms[0].saved == -(-(300 + 1) // 16)  # prompt + first token, in blocks
    assert b.tokens_prefilled == 0          # its KV came along: nothing recomputed
    assert "swap_in" in host.events          # restored on b (moved from a's host)
    assert req.instances == ["i0", "i1"]
    assert req.migrations == 0              # a move is not counted as a migration yet
    _check_empty(a, b)


def test_a_decoding_request_detached_without_its_kv_recomputes():
    env, host, a, b = pair()
    req = Request(0, RequestSpec(0.0, 300, 50), priority=0)
    a.mechanisms = (MoveOnce(req, rq.DECODING, b, save_kv=False),)
    a.enqueue(req)
    env.run(until=100)
    assert a.mechanisms[0].saved == 0
    assert b.tokens_prefilled == 300 + 1    # prompt and the generated token, again
    assert req.generated == req.output_tokens
    _check_empty(a, b)


def test_a_waiting_request_moves_and_its_claim_on_blocks_goes_with_it():
    env, host, a, b = pair(max_num_seqs=1)
    first = Request(0, RequestSpec(0.0, 100, 200), priority=0)
    second = Request(1, RequestSpec(0.0, 100, 20), priority=0)
    a.mechanisms = (MoveOnce(second, rq.WAITING, b),)
    a.enqueue(first)
    a.enqueue(second)
    env.run(until=100)
    assert sorted((r.request_id, s) for r, s in host.done) == [(0, "finished"), (1, "finished")]
    assert second.instances == ["i0", "i1"]
    assert second.finish_time < first.finish_time  # served on b, not behind first on a
    _check_empty(a, b)


def test_a_swapped_request_cannot_be_detached():
    env, host, a, b = pair()
    req = Request(0, RequestSpec(0.0, 10, 5), priority=0)
    req.phase = rq.SWAPPED
    try:
        a.detach(req, save_kv=True)
    except ValueError as err:
        assert "only running or waiting" in str(err)
    else:
        raise AssertionError("detaching a swapped request must be refused")


def test_reserve_commit_and_cancel_keep_every_block_owned_once():
    env, host, a, b = pair()
    kv = a.kv
    assert a.reserve_blocks("incoming", 100)
    assert kv.free_blocks == kv.capacity - 100 and a.view(0.0).kv_used_blocks == 100
    assert not a.reserve_blocks("greedy", kv.free_blocks)  # would dip into the watermark
    assert a.reserve_blocks("greedy", kv.free_blocks, respect_watermark=False)
    assert a.cancel_reserved("greedy") > 0
    kv.check_invariants()
    assert a.commit_reserved("incoming") == 100
    assert kv.owned("incoming") == 100 and kv.reserved("incoming") == 0
    kv.check_invariants()
    assert a.cancel_reserved("incoming") == 0  # nothing left reserved
    kv.free("incoming")
    assert kv.free_blocks == kv.capacity
