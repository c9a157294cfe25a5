"""Roofline iteration time, KV capacity and transfer times: metamorphic and analytical checks."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chironsim.catalog import get_gpu, get_model
from chironsim.errors import ChironError, ConfigError
from chironsim.perf import (
    Efficiency,
    IterationTimeModel,
    expected_experts_touched,
    kv_block_bytes,
    kv_capacity_blocks,
    kv_transfer_time,
    prefill_attention_work,
    swap_time,
    weight_load_seconds,
)

A100 = get_gpu("A100-80GB")
CASES = [("Llama-3-8B", 1), ("Llama-3-70B", 4), ("Mixtral-8x7B", 2), ("Qwen2.5-7B", 1)]
TIMERS = {case: IterationTimeModel(get_model(case[0]), A100, case[1]) for case in CASES}

counts = st.integers(min_value=0, max_value=4096)
batch = st.tuples(counts, st.integers(0, 10**7), st.integers(0, 512), st.integers(0, 10**6))


def bare(**changes: float) -> Efficiency:
    return Efficiency.default().replace(iteration_overhead_s=0.0, **changes)


def test_empty_iteration_costs_nothing():
    timer = TIMERS[("Llama-3-8B", 1)]
    assert timer.iteration_time(0, 0.0, 0, 0.0) == 0.0
    assert np.array_equal(timer.iteration_time(np.zeros(3), 0.0, np.array([0, 1, 0]), 0.0) > 0, [False, True, False])


@pytest.mark.parametrize("case", CASES, ids=str)
@settings(max_examples=25, deadline=None)
@given(rows=st.lists(batch, min_size=1, max_size=12))
def test_array_call_equals_scalar_calls_exactly(case, rows):
    timer = TIMERS[case]
    columns = [np.array(c) for c in zip(*rows)]
    vector = timer.iteration_time(*columns)
    scalars = [timer.iteration_time(int(a), float(b), int(c), float(d)) for a, b, c, d in rows]
    assert np.array_equal(vector, np.array(scalars))


def test_numpy_scalars_take_the_scalar_path_with_equal_results():
    timer = TIMERS[("Mixtral-8x7B", 2)]
    plain = timer.iteration_time(64, 5000.0, 7, 900.0)
    assert timer.iteration_time(np.int64(64), np.float64(5000.0), np.int64(7), np.int64(900)) == plain
    assert timer.iteration_time(np.array(64), 5000.0, 7, 900.0) == plain


def test_arguments_broadcast():
    timer = TIMERS[("Llama-3-70B", 4)]
    contexts = np.arange(100, 200, 10) * 8.0
    times = timer.iteration_time(0, 0.0, 8, contexts)
    assert times.shape == contexts.shape
    assert times[3] == timer.iteration_time(0, 0.0, 8, float(contexts[3]))


@pytest.mark.parametrize("case", CASES, ids=str)
@settings(max_examples=40, deadline=None)
@given(base=batch, which=st.integers(0, 3), step=st.integers(1, 5000))
def test_time_is_non_decreasing_in_every_argument(case, base, which, step):
    timer = TIMERS[case]
    grown = list(base)
    grown[which] += step
    assert timer.iteration_time(*map(float, grown)) >= timer.iteration_time(*map(float, base))


@settings(max_examples=40, deadline=None)
@given(rows=st.lists(batch, min_size=1, max_size=8), tp=st.sampled_from([1, 2, 4]))
def test_a_gpu_with_more_flops_and_bandwidth_is_never_slower(rows, tp):
    faster = dataclasses.replace(A100, bf16_flops=A100.bf16_flops * 1.7, hbm_bytes_per_s=A100.hbm_bytes_per_s * 1.3,
                                 link_bytes_per_s=A100.link_bytes_per_s * 1.5)
    model = get_model("Llama-3-70B" if tp > 1 else "Llama-3-8B")
    columns = [np.array(c, dtype=float) for c in zip(*rows)]
    slow = IterationTimeModel(model, A100, tp).iteration_time(*columns)
    fast = IterationTimeModel(model, faster, tp).iteration_time(*columns)
    assert np.all(fast <= slow)
    for newer, older in [("H100-SXM", "A100-80GB"), ("H200", "H100-SXM"), ("B200", "H200")]:
        assert np.all(IterationTimeModel(model, get_gpu(newer), tp).iteration_time(*columns)
                      <= IterationTimeModel(model, get_gpu(older), tp).iteration_time(*columns))


def test_small_batch_decode_is_memory_bound():
    model = get_model("Llama-3-8B")
    eff = bare()
    timer = IterationTimeModel(model, A100, 1, eff)
    streaming = model.weight_bytes() / (A100.hbm_bytes_per_s * eff.gemm_memory)
    one = timer.iteration_time(0, 0.0, 1, 500.0)
    assert streaming <= one <= 1.2 * streaming  # the rest is kernel floors and a little KV
    # 8x the tokens for < 10 % more time: weights are read once; the rest is KV reads and overlap
    assert timer.iteration_time(0, 0.0, 8, 4000.0) < 1.1 * one


def test_large_prefill_is_compute_bound():
    model = get_model("Llama-3-8B")
    eff = bare()
    tokens = 8192
    timer = IterationTimeModel(model, A100, 1, eff)
    linear = 2 * tokens * model.param_count / (A100.bf16_flops * eff.gemm_compute)
    total = timer.iteration_time(tokens, prefill_attention_work(tokens, 0.0), 0, 0.0)
    assert linear < total < 1.35 * linear


def test_tensor_parallelism_speeds_up_large_model_decode_and_costs_all_reduces():
    model = get_model("Llama-3-70B")
    times = [IterationTimeModel(model, A100, tp).iteration_time(0, 0.0, 8, 8000.0) for tp in (2, 4, 8)]
    assert times[0] > times[1] > times[2]
    no_link = dataclasses.replace(A100, link_bytes_per_s=A100.link_bytes_per_s / 100)
    assert IterationTimeModel(model, no_link, 4).iteration_time(2048, 2e6, 0, 0.0) > \
        IterationTimeModel(model, A100, 4).iteration_time(2048, 2e6, 0, 0.0)


def test_moe_reads_only_the_experts_its_tokens_touch():
    assert expected_experts_touched(0, 8, 2) == 0
    assert expected_experts_touched(1, 8, 2) == pytest.approx(2.0)
    assert expected_experts_touched(10_000, 8, 2) == pytest.approx(8.0)
    mixtral = get_model("Mixtral-8x7B")
    eff = bare()
    timer = IterationTimeModel(mixtral, A100, 2, eff)
    all_weights = mixtral.weight_bytes() / 2 / (A100.hbm_bytes_per_s * eff.gemm_memory)
    single = timer.iteration_time(0, 0.0, 1, 100.0)
    assert single < 0.45 * all_weights
    assert timer.iteration_time(0, 0.0, 32, 3200.0) > 2 * single


def test_prefill_attention_work_is_causal_pairs():
    assert prefill_attention_work(10, 0) == 50
    assert prefill_attention_work(4, 100) == 408
    assert np.array_equal(prefill_attention_work(np.array([2, 4]), np.array([0, 10])), [2.0, 48.0])


def test_default_efficiency_is_the_shipped_calibration():
    timer = IterationTimeModel(get_model("Llama-2-7B"), A100)
    assert timer.efficiency == Efficiency.default()
    eff = Efficiency.default()
    assert 0.5 < eff.gemm_compute <= 1 and 0.5 < eff.gemm_memory <= 1 and eff.iteration_overhead_s > 0


def test_efficiency_rejects_bad_values():
    with pytest.raises(ConfigError, match="gemm_compute"):
        Efficiency.default().replace(gemm_compute=1.5)
    with pytest.raises(ConfigError, match="kernel_floor_s"):
        Efficiency.default().replace(kernel_floor_s=-1.0)
    values = Efficiency.default().to_mapping()
    assert Efficiency.from_mapping(values) == Efficiency.default()
    with pytest.raises(ConfigError, match="unknown keys \\['gemm_efficency'\\]"):
        Efficiency.from_mapping({**values, "gemm_efficency": 0.5})
    with pytest.raises(ConfigError):
        IterationTimeModel(get_model("Llama-2-7B"), A100, tp=0)


def test_scalar_call_is_fast():
    timer = TIMERS[("Llama-3-8B", 1)]
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for i in range(2000):
            timer.iteration_time(0, 0.0, 8, 800.0 + i)
        best = min(best, (time.perf_counter() - start) / 2000)
    assert best < 25e-6  # target < 10 us; the bound leaves room for a loaded CI machine


def test_kv_capacity_matches_the_formula():
    model = get_model("Llama-3-8B")
    assert kv_block_bytes(model, 16) == 16 * 131072
    reserve = 2 * 2**30
    free = A100.memory_bytes * 0.9 - model.weight_bytes() - reserve
    assert kv_capacity_blocks(model, A100, 1, 0.9, 16, reserve) == int(free // (16 * 131072))
    assert kv_capacity_blocks(model, A100, 1, block_size=32) == pytest.approx(
        kv_capacity_blocks(model, A100, 1, block_size=16) / 2, abs=1)
    assert kv_capacity_blocks(get_model("Llama-3-70B"), A100, 8) > 2 * kv_capacity_blocks(get_model("Llama-3-70B"), A100, 4) * 0.9


def test_kv_heads_replicate_beyond_their_count():
    model = get_model("Llama-3-8B")  # 8 KV heads
    assert kv_block_bytes(model, 16, tp=8) == kv_block_bytes(model, 16)
    assert kv_block_bytes(model, 16, tp=16) == 2 * kv_block_bytes(model, 16)


def test_model_that_does_not_fit_says_so_with_numbers():
    with pytest.raises(ChironError, match=r"Llama-3-70B does not fit on 1 x A100-80GB: 72\.0 GiB usable.*131\.4 GiB of weights"):
        kv_capacity_blocks(get_model("Llama-3-70B"), A100, 1)
    with pytest.raises(ConfigError):
        kv_capacity_blocks(get_model("Llama-3-8B"), A100, 1, gpu_memory_utilization=1.5)


def test_transfer_times():
    block = kv_block_bytes(get_model("Llama-3-8B"), 16)
    one = swap_time(100, block, A100, 1)
    assert one == pytest.approx(100 * block / 32e9)
    assert swap_time(100, block, A100, 2) == pytest.approx(one / 2)
    assert np.allclose(swap_time(np.array([0, 100]), block, A100, 1), [0.0, one])
    assert weight_load_seconds(16e9, 2e9) == pytest.approx(8.0)
    assert kv_transfer_time(10, 1e6, 1e9, 0.002) == pytest.approx(0.012)
    with pytest.raises(ConfigError):
        weight_load_seconds(1.0, 0.0)
    with pytest.raises(ConfigError):
        kv_transfer_time(1, 1.0, 1e9, -1.0)
