"""KunServe's fused-group prices (issue 10 item 1): capacity after a drop, per-stage roofline,
pipelined micro-batch and cycle time, KV exchange and restore durations. Expected values are
computed here from the models' shapes and the formulas of the issue, not by the code under test."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chironsim.catalog import get_gpu, get_model
from chironsim.errors import ConfigError
from chironsim.perf import Efficiency, IterationTimeModel, comm_for_gpu, kv_capacity_blocks
from chironsim.perf.drop import droppable_weight_bytes, fused_capacity_tokens, fused_kv_capacity_blocks
from chironsim.perf.exchange import exchange_batches, kv_exchange_seconds, restore_seconds
from chironsim.perf.pipeline import (bubble_seconds, cycle_time, micro_batch_time, pipeline_round, stage_layers,
                                     stage_times)

GIB = 2**30
RESERVE = 2 * GIB


def shapes(model, tp):
    """(per-layer weight bytes, all weight bytes, KV bytes per token over the tp GPUs), BF16,
    from the model's shapes (dense, untied, no bias: the models used here)."""
    h, d, inter = model.hidden_size, model.head_dim, model.intermediate_size
    q, kv = model.num_heads * d, model.num_kv_heads * d
    layer = (h * (q + 2 * kv) + q * h + 3 * h * inter + 2 * h) * 2
    total = model.num_layers * layer + 2 * model.vocab_size * h * 2 + h * 2
    kv_heads_held = math.ceil(model.num_kv_heads / tp) * tp  # replicated past their count
    kappa = 2 * model.num_layers * kv_heads_held * d * 2
    return layer, total, kappa


CAPACITY_CASES = [("Llama-2-7B", "A10", 1, 2), ("Llama-2-7B", "A100-80GB", 1, 2), ("Llama-2-7B", "A100-80GB", 1, 4),
                  ("Llama-3.1-70B", "A100-80GB", 4, 2), ("Llama-3.1-70B", "A100-80GB", 4, 4)]


@pytest.mark.parametrize("name,gpu_name,tp,g", CAPACITY_CASES)
def test_capacity_after_a_drop_is_the_formula(name, gpu_name, tp, g):
    model, gpu = get_model(name), get_gpu(gpu_name)
    layer, total, kappa = shapes(model, tp)
    assert total == model.weight_bytes()  # the catalog's count agrees with the shapes
    m_kv = gpu.memory_bytes * 0.9 * tp - total - RESERVE  # one member's KV memory
    w = model.num_layers * layer  # its per-layer weights (embeddings, LM head and final norm stay)
    c_after = g * m_kv / kappa + (g - 1) * w / kappa
    assert fused_capacity_tokens(m_kv, droppable_weight_bytes(model), kappa, g) == pytest.approx(c_after, rel=1e-12)
    # per GPU: M_kv, W and κ of one GPU give the same tokens
    kappa_gpu = 2 * model.num_layers * math.ceil(model.num_kv_heads / tp) * model.head_dim * 2
    assert (g * (m_kv / tp) + (g - 1) * (w / tp)) / kappa_gpu == pytest.approx(c_after, rel=1e-12)
    blocks = fused_kv_capacity_blocks(model, gpu, tp, g, 0.9, 16, RESERVE)
    assert blocks == math.floor(c_after / 16)
    before = kv_capacity_blocks(model, gpu, tp, 0.9, 16, RESERVE)
    assert before == math.floor(m_kv / (16 * kappa))
    assert blocks >= g * before
    # the gain is the dropped weights as KV: (g−1)·W/κ tokens, up to the blocks' rounding
    assert abs((blocks - g * before) * 16 - (g - 1) * w / kappa) <= 16 * (g + 1)


def test_seventy_b_tp4_gains_more_than_its_members_held():
    """Llama-3.1-70B on 4 x A100-80GB: weights are most of memory, so g = 2 more than doubles
    the group's KV (the regime where KunServe should help most)."""
    model, gpu = get_model("Llama-3.1-70B"), get_gpu("A100-80GB")
    before = kv_capacity_blocks(model, gpu, 4)
    assert fused_kv_capacity_blocks(model, gpu, 4, 2) > 2.5 * before


def test_uneven_split_takes_the_tightest_member():
    model, gpu = get_model("Llama-2-7B"), get_gpu("A100-80GB")  # 32 layers in 3 stages: 10, 11, 11
    assert stage_layers(32, 3) == (10, 11, 11)
    layer, total, kappa = shapes(model, 1)
    free = gpu.memory_bytes * 0.9 - total - RESERVE
    per_layer_block = 16 * kappa // model.num_layers
    expected = min(int((free + (32 - k) * layer) // (k * per_layer_block)) for k in (10, 11, 11))
    assert fused_kv_capacity_blocks(model, gpu, 1, 3, 0.9, 16, RESERVE) == expected


@settings(max_examples=200, deadline=None)
@given(layers=st.integers(1, 200), stages=st.integers(1, 200))
def test_stage_split_covers_every_layer_once(layers, stages):
    if stages > layers:
        with pytest.raises(ConfigError):
            stage_layers(layers, stages)
        return
    split = stage_layers(layers, stages)
    assert sum(split) == layers and len(split) == stages and max(split) - min(split) <= 1 and min(split) >= 1


# --- per-stage roofline ------------------------------------------------------------------------

A100 = get_gpu("A100-80GB")
TIMERS = {case: IterationTimeModel(get_model(case[0]), A100, case[1])
          for case in [("Llama-3-8B", 1), ("Llama-3.1-70B", 4), ("Mixtral-8x7B", 2)]}
batch = st.tuples(st.integers(0, 4096), st.integers(0, 10**7), st.integers(0, 512), st.integers(0, 10**6))


@pytest.mark.parametrize("case", TIMERS, ids=str)
@settings(max_examples=30, deadline=None)
@given(row=batch, g=st.sampled_from([2, 3, 4]))
def test_stages_sum_to_the_full_price_plus_one_overhead_per_extra_stage(case, row, g):
    """Identity: Σ_i stage_time(L_i, i = last) = iteration_time + (g − 1) × overhead (each stage
    is one engine step and pays the per-iteration overhead; nothing else is duplicated: the LM
    head runs once, on the last stage), up to the rounding of splitting L × layer."""
    timer = TIMERS[case]
    layers = stage_layers(timer.model.num_layers, g)
    full = timer.iteration_time(*row)
    staged = sum(stage_times(timer, layers, *row))
    extra = (g - 1) * timer.efficiency.iteration_overhead_s if full > 0 else 0.0
    assert staged == pytest.approx(full + extra, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("case", TIMERS, ids=str)
def test_one_stage_of_every_layer_is_the_iteration_bit_for_bit(case):
    timer = TIMERS[case]
    rows = [(0, 0.0, 8, 8000.0), (512, 512 * 300.0, 16, 20000.0), (1, 0.5, 0, 0.0), (0, 0.0, 0, 0.0)]
    for row in rows:
        assert timer.stage_time(timer.model.num_layers, True, *row) == timer.iteration_time(*row)


def test_the_lm_head_is_priced_on_the_last_stage_only():
    timer = IterationTimeModel(get_model("Llama-3-8B"), A100, 1, Efficiency.default().replace(iteration_overhead_s=0.0))
    head_only = timer.stage_time(0, True, 0, 0.0, 8, 8000.0)
    assert head_only > 0 and timer.stage_time(0, False, 0, 0.0, 8, 8000.0) == 0.0
    assert timer.stage_time(16, True, 0, 0.0, 8, 8000.0) == pytest.approx(
        timer.stage_time(16, False, 0, 0.0, 8, 8000.0) + head_only, rel=1e-12)
    with pytest.raises(ConfigError):
        timer.stage_time(33, False, 0, 0.0, 8, 8000.0)
    with pytest.raises(ConfigError):
        timer.stage_time(2.5, False, 0, 0.0, 8, 8000.0)


@pytest.mark.parametrize("case", TIMERS, ids=str)
@settings(max_examples=25, deadline=None)
@given(rows=st.lists(batch, min_size=1, max_size=10), layers=st.integers(0, 32), last=st.booleans())
def test_stage_array_call_equals_scalar_calls_exactly(case, rows, layers, last):
    timer = TIMERS[case]
    columns = [np.array(c) for c in zip(*rows)]
    vector = timer.stage_time(layers, last, *columns)
    scalars = [timer.stage_time(layers, last, int(a), float(b), int(c), float(d)) for a, b, c, d in rows]
    assert np.array_equal(vector, np.array(scalars))


@pytest.mark.parametrize("case", TIMERS, ids=str)
@settings(max_examples=25, deadline=None)
@given(rows=st.lists(batch, min_size=1, max_size=10), g=st.sampled_from([2, 4]), same_node=st.booleans())
def test_micro_batch_is_its_stages_plus_one_hop_per_boundary(case, rows, g, same_node):
    timer = TIMERS[case]
    comm = comm_for_gpu(A100)
    layers = stage_layers(timer.model.num_layers, g)
    h = timer.model.hidden_size
    for row in rows:
        stages = [timer.stage_time(n, i == g - 1, *row) for i, n in enumerate(layers)]
        hop = comm.send_recv((row[0] + row[2]) * h * 2, same_node)
        expected = 0.0
        for s in stages:
            expected += s
        for _ in range(g - 1):
            expected += hop
        assert micro_batch_time(timer, comm, layers, *row, same_node=same_node) == expected
    columns = [np.array(c) for c in zip(*rows)]
    vector = micro_batch_time(timer, comm, layers, *columns, same_node=same_node)
    scalars = [micro_batch_time(timer, comm, layers, int(a), float(b), int(c), float(d), same_node=same_node)
               for a, b, c, d in rows]
    assert np.array_equal(vector, np.array(scalars))


# --- pipeline schedule ----------------------------------------------------------------------

def test_cycle_of_equal_micro_batches_is_one_micro_batch_latency():
    s, h = 0.010, 0.001
    for g in (2, 3, 4):
        stages = [[s] * g for _ in range(g)]
        assert cycle_time(stages, [h] * g) == pytest.approx(g * s + (g - 1) * h)
        assert bubble_seconds(stages, [h] * g) == pytest.approx(((g - 1) * h,) * g)


def test_unequal_micro_batches_leave_a_bubble():
    a, b = 0.004, 0.010  # two micro-batches on two stages, no hop cost: the big one sets the pace
    stages = [[a, a], [b, b]]
    assert cycle_time(stages, [0.0, 0.0]) == pytest.approx(2 * b)
    assert bubble_seconds(stages, [0.0, 0.0]) == pytest.approx((b - a, b - a))


def test_a_round_from_an_idle_pipeline_is_the_flow_shop():
    finish, free = pipeline_round([[1.0, 2.0], [3.0, 1.0]], [0.5, 0.5], [0.0, 0.0], [0.0, 0.0])
    # mb0: stage0 0-1, hop, stage1 1.5-3.5; mb1: stage0 1-4, hop, stage1 4.5-5.5
    assert finish == (3.5, 5.5) and free == (4.0, 5.5)


@settings(max_examples=60, deadline=None)
@given(data=st.data(), m=st.integers(1, 4), g=st.integers(1, 4))
def test_cycle_time_is_the_long_run_period_of_the_rounds(data, m, g):
    times = st.integers(0, 100).map(lambda x: x / 1000)
    stages = [[data.draw(times) for _ in range(g)] for _ in range(m)]
    hops = [data.draw(times) for _ in range(m)]
    period = cycle_time(stages, hops)
    assert period >= max(sum(row[i] for row in stages) for i in range(g)) - 1e-12
    assert period >= max(sum(row) + (g - 1) * hop for row, hop in zip(stages, hops)) - 1e-12
    ready, free = [0.0] * m, [0.0] * g
    rounds = 400
    for k in range(rounds):
        ready, free = pipeline_round(stages, hops, ready, free)
        if k == 99:
            start = max(ready + free)
    assert (max(list(ready) + list(free)) - start) / (rounds - 100) == pytest.approx(period, rel=1e-6, abs=1e-9)


# --- exchange and restore ---------------------------------------------------------------------

@pytest.mark.parametrize("name,gpu_name,tp", [("Llama-2-7B", "A10", 1), ("Llama-3.1-70B", "A100-80GB", 4)])
@pytest.mark.parametrize("g", [2, 4])
def test_exchange_and_restore_durations_are_their_formulas(name, gpu_name, tp, g):
    model, gpu = get_model(name), get_gpu(gpu_name)
    comm = comm_for_gpu(gpu)
    layer, _, kappa = shapes(model, tp)
    kappa_gpu = kappa / tp
    stale = [1500, 40, 8000, 3, 700, 2048, 4096, 1, 9000, 12]
    steps = exchange_batches(stale, 8)
    assert steps == [tuple(stale[:8]), tuple(stale[8:])]
    for step in steps:
        expected = comm.send_recv(sum(step) * kappa_gpu * (g - 1) / g, True)
        assert kv_exchange_seconds(comm, model, tp, g, step) == pytest.approx(expected, rel=1e-12)
    with pytest.raises(ConfigError):
        kv_exchange_seconds(comm, model, tp, g, stale)
    reload_bytes = model.num_layers * (g - 1) / g * layer / tp  # L·(g−1)/g layers per GPU
    for same_node in (True, False):
        assert restore_seconds(comm, model, tp, g, same_node) == pytest.approx(
            comm.send_recv(reload_bytes, same_node), rel=1e-12)


def test_restore_moves_at_the_link_rate_for_large_models():
    """At GB sizes the send/recv curve is in its bandwidth regime: within a factor of two of the
    catalog link rate (not its latency floor)."""
    model, gpu = get_model("Llama-3.1-70B"), get_gpu("A100-80GB")
    layer, _, _ = shapes(model, 4)
    seconds = restore_seconds(comm_for_gpu(gpu), model, 4, 2)
    nominal = model.num_layers / 2 * layer / 4 / gpu.link_bytes_per_s
    assert nominal <= seconds <= 2 * nominal
