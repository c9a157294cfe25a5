"""Roofline iteration-time model: how long one continuous-batching engine iteration takes.

Each operator group costs max(compute, memory) + overlap x min(compute, memory) + a kernel
floor, where compute = FLOPs / (peak x gemm_compute) and memory = bytes / (HBM x efficiency).
With overlap = 0 and no floor this is the textbook roofline; the two extra terms are fitted
to measured kernels (see docs/latency-model.md) because the plain max() undershoots GEMMs near
the ridge point by 15-20 %. A layer is: QKV, O, MLP up (gate+up) and down GEMMs; prefill and
decode attention; the element-wise kernels (2 norms, RoPE, activation, residual add); and two
tensor-parallel all-reduces. The iteration adds the LM head and a fixed overhead.

The simulator calls `iteration_time` once per iteration, and with numpy arrays to price a
stretch of decode iterations at once. Both paths evaluate the same expression in the same
order (builtin max/min for Python scalars, np.maximum/np.minimum otherwise), so an array
call equals the element-wise scalar calls bit for bit.
"""

from __future__ import annotations

import math
from typing import Callable, Union

import numpy as np

from chironsim.catalog.specs import GPU, Model
from chironsim.errors import ConfigError
from chironsim.perf.efficiency import Efficiency

ArrayLike = Union[float, int, np.ndarray]

DTYPE_BYTES = 2  # BF16 weights, activations and KV cache
FLASH_QUERY_TILE = 128  # FlashAttention re-reads the cached K/V once per tile of query rows
ELEMENTWISE_KERNELS = 5  # input norm, RoPE, post-attention norm, SiLU-and-mul, residual add
_SCALARS = (int, float, np.int64, np.int32, np.float64)  # exact double arithmetic; not float32


def operator_time(compute_s, memory_s, overlap: float, floor_s: float):
    """One kernel group: the larger of compute and memory time, plus the unhidden share of the
    smaller one, plus the kernel floor. Vectorised (numpy); the calibration fits with it."""
    return np.maximum(compute_s, memory_s) + overlap * np.minimum(compute_s, memory_s) + floor_s


def prefill_attention_work(chunk_tokens: ArrayLike, cached_tokens: ArrayLike) -> ArrayLike:
    """Query-key pairs of a causal prefill chunk of n tokens after p cached ones: n(p + n/2)."""
    return chunk_tokens * (cached_tokens + chunk_tokens / 2)


def expected_experts_touched(tokens: ArrayLike, num_experts: int, experts_per_token: int):
    """Expected distinct experts that `tokens` tokens reach when each picks k of E uniformly."""
    miss = 1.0 - experts_per_token / num_experts
    return num_experts * (1.0 - np.power(miss, np.asarray(tokens, dtype=float)))


class IterationTimeModel:
    """Seconds per engine iteration for one model replica on `tp` GPUs of one kind."""

    def __init__(self, model: Model, gpu: GPU, tp: int = 1, efficiency: Efficiency | None = None):
        if tp < 1:
            raise ConfigError(f"tensor parallelism must be >= 1, got {tp}")
        eff = efficiency if efficiency is not None else Efficiency.default()
        self.model, self.gpu, self.tp, self.efficiency = model, gpu, tp, eff
        b = DTYPE_BYTES
        flops = gpu.bf16_flops * eff.gemm_compute
        hbm = gpu.hbm_bytes_per_s * eff.gemm_memory
        h = model.hidden_size
        q_dim = math.ceil(model.num_heads / tp) * model.head_dim
        kv_dim = model.kv_heads_per_gpu(tp) * model.head_dim
        inter = model.intermediate_size / tp
        k = model.experts_per_token if model.is_moe else 1

        def gemm(weights: float, act_width: float, tokens_per_row: float = 1.0):
            # (seconds of compute per token, seconds to stream the weights, seconds per token of activations)
            return (2 * tokens_per_row * weights / flops, weights * b / hbm, tokens_per_row * act_width * b / hbm)

        self._attn_gemms = (gemm(h * (q_dim + 2 * kv_dim), h + q_dim + 2 * kv_dim), gemm(q_dim * h, q_dim + h))
        mlp = (gemm(h * 2 * inter, h + 2 * inter, k), gemm(inter * h, inter + h, k))
        self._moe = model.is_moe
        if self._moe:
            self._expert_gemms = mlp  # weight term is per touched expert
            self._dense_gemms = self._attn_gemms
            self._num_experts, self._k = model.num_experts, model.experts_per_token
        else:
            self._dense_gemms = self._attn_gemms + mlp
        self._lm_head = gemm(h * model.vocab_size / tp, h + model.vocab_size / tp)

        kv_token = 2 * kv_dim * b  # K and V bytes per token per layer on one GPU
        self._attn_flops = 4 * q_dim / flops  # QK^T and PV, 2 FLOPs per multiply-add
        self._attn_read_per_work = kv_token / (FLASH_QUERY_TILE * hbm)
        self._attn_per_context = kv_token / hbm
        self._attn_per_token = (kv_token + 2 * q_dim * b) / hbm  # KV write, Q read, O write

        elementwise_bytes = b * (7 * h + 2 * (q_dim + kv_dim) + 3 * k * inter)
        self._elementwise_per_token = elementwise_bytes / (gpu.hbm_bytes_per_s * eff.elementwise_memory)
        self._elementwise_fixed = ELEMENTWISE_KERNELS * eff.elementwise_floor_s

        if tp > 1:
            ring = 2 * (tp - 1) / tp
            self._allreduce_fixed = 2 * eff.allreduce_latency_s
            self._allreduce_per_token = 2 * ring * h * b / (gpu.link_bytes_per_s * eff.link)
        else:
            self._allreduce_fixed = self._allreduce_per_token = 0.0

        self._layers = model.num_layers
        self._overlap = eff.overlap
        self._floor = eff.kernel_floor_s
        self._overhead = eff.iteration_overhead_s

    def iteration_time(self, prefill_tokens, prefill_attention_work, decode_seqs, decode_context):
        """Seconds for one engine iteration (continuous batching, chunked prefill).

        prefill_tokens: tokens of prefill chunks in this iteration; prefill_attention_work:
        sum over chunks of n*(p + n/2) for a chunk of n tokens after p cached tokens;
        decode_seqs: number of decoding sequences (1 token each); decode_context: sum of their
        context lengths. Each argument may be a scalar or a numpy array (broadcast); an
        iteration with no tokens costs 0.
        """
        if (
            type(prefill_tokens) in _SCALARS
            and type(prefill_attention_work) in _SCALARS
            and type(decode_seqs) in _SCALARS
            and type(decode_context) in _SCALARS
        ):
            if prefill_tokens + decode_seqs <= 0:
                return 0.0
            return self._time(float(prefill_tokens), float(prefill_attention_work), float(decode_seqs),
                              float(decode_context), max, min)
        args = (prefill_tokens, prefill_attention_work, decode_seqs, decode_context)
        arrays = [np.asarray(a, dtype=float) for a in args]
        tokens = arrays[0] + arrays[2]
        result = np.where(tokens > 0, self._time(*arrays, np.maximum, np.minimum), 0.0)
        return float(result) if result.ndim == 0 else result

    def _time(self, pt, paw, ds, dc, maximum: Callable, minimum: Callable):
        overlap, floor = self._overlap, self._floor
        tokens = pt + ds
        layer = self._elementwise_fixed + tokens * self._elementwise_per_token
        layer = layer + self._allreduce_fixed + tokens * self._allreduce_per_token
        for compute, weights, activations in self._dense_gemms:
            tc = compute * tokens
            tm = weights + activations * tokens
            layer = layer + (maximum(tc, tm) + overlap * minimum(tc, tm) + floor)
        if self._moe:
            touched = expected_experts_touched(tokens, self._num_experts, self._k)
            if maximum is max:
                touched = float(touched)
            for compute, weights, activations in self._expert_gemms:
                tc = compute * tokens
                tm = weights * touched + activations * tokens
                layer = layer + (maximum(tc, tm) + overlap * minimum(tc, tm) + floor)
        # prefill attention: compute on query-key pairs, memory on KV read per query tile + writes
        tc = self._attn_flops * paw
        tm = self._attn_read_per_work * paw + self._attn_per_token * pt
        layer = layer + (maximum(tc, tm) + overlap * minimum(tc, tm) + floor * (pt > 0))
        # decode attention: every sequence reads its whole context's K and V
        tc = self._attn_flops * dc
        tm = self._attn_per_context * dc + self._attn_per_token * ds
        layer = layer + (maximum(tc, tm) + overlap * minimum(tc, tm) + floor * (ds > 0))
        # LM head on the tokens that are sampled: every decode, and the last token of a prefill
        compute, weights, activations = self._lm_head
        sampled = ds + minimum(pt, 1.0)
        tc = compute * sampled
        tm = weights + activations * sampled
        head = maximum(tc, tm) + overlap * minimum(tc, tm) + floor
        return self._layers * layer + head + self._overhead
