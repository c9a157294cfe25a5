"""A fused group's micro-batch queues (issue 10 items 1-2): which queue a request joins, the
decode rebalancing, the chunking of long prompts across queues, and a round's price."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chironsim.catalog import get_gpu, get_model
from chironsim.contract.actions import DropParameters, RestoreParameters
from chironsim.perf.efficiency import comm_for_gpu
from chironsim.perf.pipeline import cycle_time, hop_time, micro_batch_time, stage_layers, stage_times
from chironsim.perf.roofline import IterationTimeModel
from chironsim.sim import request as rq
from chironsim.sim.decode_set import DecodeSet
from chironsim.sim.mechanisms.microbatch import MicroBatchQueues, water_fill
from chironsim.sim.request import Request
from chironsim.metrics.slo import RequestClassSpec
from chironsim.policies.routers import RoundRobinRouter
from chironsim.sim.config import ClusterConfig, EngineConfig, PoolConfig
from chironsim.sim.world import Simulation
from chironsim.workload.spec import RequestSpec
from test_fusion import Watch

MODEL, GPU = get_model("llama-3-8b"), get_gpu("a100-80gb")
TIMER = IterationTimeModel(MODEL, GPU, 1)
COMM = comm_for_gpu(GPU)
LEADER = object()  # stands for the fused leader: the queues only compare identity


def queues(g: int = 2) -> MicroBatchQueues:
    return MicroBatchQueues(TIMER, COMM, g, True, LEADER)


def request(rid: int, prompt: int = 500, output: int = 100) -> Request:
    req = Request(rid, RequestSpec(0.0, prompt, output), 0)
    req.instance = LEADER
    req.phase = rq.PREFILLING
    return req


def decoding(decodes: DecodeSet, rid: int, prompt: int, step: int = 0, generated: int = 1) -> Request:
    req = request(rid, prompt)
    req.phase = rq.DECODING
    req.generated = generated
    decodes.add(req, step)
    return req


def test_a_request_joins_the_queue_with_the_fewest_unfinished():
    q = queues(3)
    reqs = [request(i) for i in range(5)]
    assert [q.assign(r) for r in reqs] == [0, 1, 2, 0, 1]  # ties: lower index
    assert q.unfinished == [2, 2, 1]
    # two requests of queue 0 finish, one of queue 1 leaves the leader: queue 0 is emptiest
    reqs[0].phase = rq.DONE
    reqs[3].phase = rq.DONE
    reqs[1].instance = object()
    q.prune()
    assert q.unfinished == [0, 1, 1]
    assert q.assign(request(9)) == 0
    # in a round, newcomers are assigned in that order: decodes first, then prefill chunks
    decodes = DecodeSet(16)
    d = decoding(decodes, 20, 300)
    p = request(21)
    q.micro_batches(0, [(p, 100)], decodes)
    assert q.queue_of[20][1] == 0 and q.queue_of[21][1] == 1  # unfinished [1, 1, 1] -> 0, then 1
    assert d.request_id in q.queue_of


def test_decodes_are_rebalanced_by_half_the_difference():
    q = queues(2)
    decodes = DecodeSet(16)
    reqs = [decoding(decodes, i, 200 + 10 * i) for i in range(9)]
    for r in reqs:  # all on queue 0 (as if the others had finished): 9 against 0
        q.queue_of[r.request_id] = (r, 0)
    q.unfinished = [9, 0]
    assert q.rebalance(decodes) == 4  # ⌊(9 − 0)/2⌋
    assert q.decode_counts(decodes) == [5, 4] and q.unfinished == [5, 4]
    # the highest ids moved
    assert sorted(rid for rid, (_, k) in q.queue_of.items() if k == 1) == [5, 6, 7, 8]
    assert q.rebalance(decodes) == 0  # differ by one: nothing moves
    # three queues: one move per round, from the fullest to the emptiest
    q3 = queues(3)
    for r in reqs[:7]:
        q3.queue_of[r.request_id] = (r, 1)
    for r in reqs[7:]:
        q3.queue_of[r.request_id] = (r, 2)
    q3.unfinished = [0, 7, 2]
    assert q3.rebalance(decodes) == 3 and q3.decode_counts(decodes) == [3, 4, 2]


@given(st.lists(st.integers(0, 300), min_size=1, max_size=5), st.integers(0, 5000))
@settings(max_examples=200, deadline=None)
def test_water_fill_shares_out_everything_as_evenly_as_it_can(loads, extra):
    share = water_fill(loads, extra)
    assert sum(share) == extra and min(share) >= 0
    totals = [a + b for a, b in zip(loads, share)]
    raised = [t for t, s in zip(totals, share) if s > 0]
    if raised:  # every queue that got tokens is within one of the lowest total
        assert max(raised) - min(totals) <= 1


def test_a_long_prompt_is_chunked_across_queues_to_balance():
    q = queues(2)
    decodes = DecodeSet(16)
    d = [decoding(decodes, i, 400) for i in range(4)]  # two decodes on each queue
    for r in d:
        q.assign(r)
    long = request(10, prompt=3000)
    long.prefilled = 1000  # its second chunk: positions 1000..2999
    q.queue_of[10] = (long, 1)
    q.unfinished[1] += 1
    batches = q.micro_batches(5, [(long, 2000)], decodes)
    # 4 decodes + 2000 prefill tokens: 1002 tokens a queue; the chunk is on queue 1, fills it
    # first and spills the rest onto queue 0; the positions go in round order, so queue 0
    # (first through every stage) runs positions 1000..1999 and queue 1 positions 2000..2999
    assert [b[0] for b in batches] == [1000, 1000]
    assert [b[0] + b[2] for b in batches] == [1002, 1002]
    assert batches[0][1] == pytest.approx(1000 * (1000 + 500))
    assert batches[1][1] == pytest.approx(1000 * (2000 + 500))
    # the pieces' attention work adds up to the whole chunk's
    assert batches[0][1] + batches[1][1] == pytest.approx(2000 * (1000 + 1000))
    # unequal decodes: the prefill evens the token counts out
    q2 = queues(2)
    decodes2 = DecodeSet(16)
    for i in range(5):
        q2.queue_of[i] = (decoding(decodes2, i, 400), 0)
    q2.queue_of[5] = (decoding(decodes2, 5, 400), 1)
    q2.unfinished = [5, 1]
    short = request(11, prompt=6)
    q2.queue_of[11] = (short, 0)
    q2.unfinished[0] += 1
    # rebalancing first moves 2 decodes (5 vs 1), then 6 tokens fill 3 + 3 -> 6 and 6
    batches = q2.micro_batches(0, [(short, 6)], decodes2)
    assert [b[2] for b in batches] == [3, 3] and [b[0] for b in batches] == [3, 3]


def test_a_round_is_the_pipeline_formula_of_its_queues():
    g = 2
    q = queues(g)
    decodes = DecodeSet(16)
    step = 7
    contexts = {0: 300, 1: 2500, 2: 900, 3: 4100, 4: 50}
    for rid, prompt in contexts.items():
        decoding(decodes, rid, prompt, step=0, generated=1)
    p = request(9, prompt=700)
    seconds = q.batch_time(step, [(p, 700)], decodes)
    layers = stage_layers(MODEL.num_layers, g)
    # queues by fewest unfinished: decodes 0, 2, 4 on queue 0 and 1, 3 on queue 1; the prompt
    # joins queue 1 (2 unfinished against 3); 5 decodes + 700 tokens: 353 and 352 a queue
    own = {0: [0, 2, 4], 1: [1, 3]}
    ctx = {k: sum(contexts[r] + 1 + step for r in rids) for k, rids in own.items()}  # ctx_key + step
    expect_pt = {0: 350, 1: 350}
    # the prompt's own queue (1) takes its share first; positions go in round order
    assert q.last == [(expect_pt[0], pytest.approx(350 * 175), 3, ctx[0]),
                      (expect_pt[1], pytest.approx(350 * (350 + 175)), 2, ctx[1])]
    stages = [stage_times(TIMER, layers, *b) for b in q.last]
    hops = [hop_time(COMM, b[0] + b[2], MODEL.hidden_size) for b in q.last]
    assert seconds == cycle_time(stages, hops)
    # cycle time: at least the busiest stage's work and every micro-batch's own latency
    for k, b in enumerate(q.last):
        assert seconds >= sum(stages[k]) + (g - 1) * hops[k] - 1e-12
    assert seconds >= max(sum(s[i] for s in stages) for i in range(g)) - 1e-12
    # a round with one non-empty queue: that micro-batch's stage times plus one hop per boundary
    q1 = queues(g)
    one = DecodeSet(16)
    decoding(one, 0, 800, step=0)
    seconds = q1.batch_time(3, [], one)
    batch = (0, 0.0, 1, 800 + 1 + 3)
    assert q1.last == [batch, (0, 0.0, 0, 0)]
    assert seconds == micro_batch_time(TIMER, COMM, layers, *batch)
    assert seconds == pytest.approx(sum(stage_times(TIMER, layers, *batch))
                                    + hop_time(COMM, 1, MODEL.hidden_size), rel=1e-12)


def test_a_fused_run_keeps_its_queues_balanced_and_every_request():
    specs = [RequestSpec(0.05 * i, 200 + 131 * (i % 7), 40 + 17 * (i % 5)) for i in range(40)]
    seen = []

    def watch(sim):
        fusion = sim.cluster.fusion
        factory = fusion._pipelined_time

        def make(leader, g):
            queues = factory(leader, g)
            price = queues.batch_time

            def logged(step, chunks, decodes):
                seconds = price(step, chunks, decodes)
                seen.append((sum(n for _, n in chunks), len(decodes), list(queues.last)))
                return seconds
            queues.batch_time = logged
            return queues
        fusion._pipelined_time = make

    cluster = ClusterConfig(model="llama-3-8b", gpu="a100-80gb", engine=EngineConfig(max_num_seqs=16),
                            pools={"default": PoolConfig(instances=2, tp=1)})
    ref: list = []
    script = Watch([(0.3, DropParameters(("default-0", "default-1"), "overload")),
                    (2.5, RestoreParameters("default-0", "calm"))], ref)
    sim = Simulation(cluster, {"default": RequestClassSpec()}, iter(specs), RoundRobinRouter(),
                     [script], duration_s=None, drain_s=600.0, sample_interval_s=1.0)
    ref.append(sim.cluster)
    watch(sim)
    sim.run()
    assert {r.status for r in sim.request_records} == {"finished"}
    assert sum(all(b[0] + b[2] for b in batches) for _, _, batches in seen) > 10  # both queues busy
    assert any(p and d for p, d, _ in seen)  # rounds mixing prefill and decodes
    for prefill, decodes, batches in seen:
        assert sum(b[0] for b in batches) == prefill and sum(b[2] for b in batches) == decodes
        counts = [b[2] for b in batches]
        assert max(counts) - min(counts) <= 1  # rebalanced before every round
