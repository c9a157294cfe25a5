"""Roofline iteration-time model: how long one continuous-batching engine iteration takes.

Each operator group costs max(compute, memory) + overlap x min(compute, memory) + a kernel
floor, where compute = FLOPs / (peak x gemm_compute) and memory = bytes / (HBM x efficiency).
With overlap = 0 and no floor this is the textbook roofline; the two extra terms are fitted
to measured kernels (see docs/latency-model.md) because the plain max() undershoots GEMMs near
the ridge point by 15-20 %. A layer is: QKV, O, MLP up (gate+up) and down GEMMs; prefill and
decode attention; the element-wise kernels (2 norms, RoPE, activation, residual add, each kind
with its own bandwidth fraction and floor); and two tensor-parallel all-reduces priced by the
measured, message-size dependent curves of chironsim/perf/comm.py. The iteration adds the LM
head and the engine's overhead (chironsim/perf/overhead.py): by default the GPU's calibrated
constant; an engine preset may replace it and add a term per sampled sequence and, without
CUDA graphs, a kernel-launch cost per layer of an iteration that decodes. Factors and curves are
the GPU's own where it was profiled, else its reference GPU's (chironsim/perf/efficiency.py).
A `Precision` (chironsim/perf/precision.py) sets the linear layers' weight bytes and peak (FP8
weights: one byte, the GPU's FP8 peak) and the KV bytes of attention; the LM head, activations
and all-reduces stay BF16.

Everything in a layer except attention depends only on the iteration's token count T, so that
part is tabulated per integer T (numpy, grown on demand) and a call reads it; attention and the
LM head are evaluated per call. The simulator calls `iteration_time` once per iteration, and
with numpy arrays to price a stretch of decode iterations at once. Both paths read the same
table and evaluate the same expression in the same order (builtin max/min on Python floats,
including a stretch's batch parts, which are scalars; np.maximum/np.minimum on arrays), so an
array call equals the element-wise scalar calls bit for bit. `stage_time` prices one pipeline stage (some of the layers, the LM head on the last
stage only) for KunServe's fused groups with the same table and expression, so the same parity
holds; chironsim/perf/pipeline.py adds the hops between stages.
"""

from __future__ import annotations

import math
from typing import Callable, Union

import numpy as np

from chironsim.catalog.specs import GPU, Model
from chironsim.errors import ConfigError
from chironsim.perf.comm import CommModel
from chironsim.perf.efficiency import Efficiency, comm_for_gpu
from chironsim.perf.overhead import CALIBRATED, EngineOverhead
from chironsim.perf.precision import BF16, Precision

ArrayLike = Union[float, int, np.ndarray]

DTYPE_BYTES = 2  # BF16 activations; and weights and KV cache at the default precision
FLASH_QUERY_TILE = 128  # FlashAttention re-reads the cached K/V once per tile of query rows
#: element-wise kernels per layer by kind: input and post-attention RMSNorm, RoPE, SiLU-and-mul, residual add
ELEMENTWISE_COUNTS = {"norm": 2, "rope": 1, "act": 1, "add": 1}
#: token counts above this are priced without the table (no real batch comes near it)
_TABLE_CAP = 1 << 22
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

    def __init__(self, model: Model, gpu: GPU, tp: int = 1, efficiency: Efficiency | None = None,
                 comm: CommModel | None = None, precision: Precision = BF16,
                 overhead: EngineOverhead | None = None):
        if tp < 1:
            raise ConfigError(f"tensor parallelism must be >= 1, got {tp}")
        eff = efficiency if efficiency is not None else Efficiency.for_gpu(gpu)
        self.model, self.gpu, self.tp, self.efficiency = model, gpu, tp, eff
        self.precision = precision
        self.comm = comm if comm is not None else (comm_for_gpu(gpu) if tp > 1 else None)
        b = DTYPE_BYTES
        flops = gpu.bf16_flops * eff.gemm_compute
        # the linear layers (QKV, O, MLP): weights at the weight dtype, FLOPs at its peak, with
        # the same fitted efficiency (no FP8 profiles to fit; docs/latency-model.md, "Precision")
        qflops = precision.gemm_flops(gpu) * eff.gemm_compute
        wb = precision.weight_bytes
        hbm = gpu.hbm_bytes_per_s * eff.gemm_memory
        h = model.hidden_size
        q_dim = math.ceil(model.num_heads / tp) * model.head_dim
        kv_dim = model.kv_heads_per_gpu(tp) * model.head_dim
        inter = model.intermediate_size / tp
        k = model.experts_per_token if model.is_moe else 1

        def gemm(weights: float, act_width: float, tokens_per_row: float = 1.0, peak: float = qflops,
                 weight_bytes: int = wb):
            # (seconds of compute per token, seconds to stream the weights, seconds per token of activations)
            return (2 * tokens_per_row * weights / peak, weights * weight_bytes / hbm, tokens_per_row * act_width * b / hbm)

        self._attn_gemms = (gemm(h * (q_dim + 2 * kv_dim), h + q_dim + 2 * kv_dim), gemm(q_dim * h, q_dim + h))
        mlp = (gemm(h * 2 * inter, h + 2 * inter, k), gemm(inter * h, inter + h, k))
        self._moe = model.is_moe
        if self._moe:
            self._expert_gemms = mlp  # weight term is per touched expert
            self._dense_gemms = self._attn_gemms
            self._num_experts, self._k = model.num_experts, model.experts_per_token
        else:
            self._dense_gemms = self._attn_gemms + mlp
        # the LM head stays BF16 in FP8 checkpoints
        self._lm_head = gemm(h * model.vocab_size / tp, h + model.vocab_size / tp, peak=flops, weight_bytes=b)

        kv_token = 2 * kv_dim * precision.kv_bytes  # K and V bytes per token per layer on one GPU
        self._attn_flops = 4 * q_dim / flops  # QK^T and PV, 2 FLOPs per multiply-add
        self._attn_read_per_work = kv_token / (FLASH_QUERY_TILE * hbm)
        self._attn_per_context = kv_token / hbm
        self._attn_per_token = (kv_token + 2 * q_dim * b) / hbm  # KV write, Q read, O write

        # bytes per token of each element-wise kernel kind (read + write), at its own bandwidth
        widths = {"norm": 2 * h, "rope": 2 * (q_dim + kv_dim), "act": 3 * k * inter, "add": 3 * h}
        # (fewest rows priced, seconds per row) per kind; floors summed over the kernels
        self._elementwise = tuple(
            (getattr(eff, f"{kind}_rows"),
             ELEMENTWISE_COUNTS[kind] * widths[kind] * b / (gpu.hbm_bytes_per_s * getattr(eff, f"{kind}_memory")))
            for kind in ELEMENTWISE_COUNTS)
        self._elementwise_fixed = sum(ELEMENTWISE_COUNTS[kind] * getattr(eff, f"{kind}_floor_s")
                                      for kind in ELEMENTWISE_COUNTS)
        self._allreduce_bytes_per_token = h * b  # one BF16 hidden vector per token, twice per layer

        self._layers = model.num_layers
        self._overlap = eff.overlap
        self._floor = eff.kernel_floor_s
        # The engine's own cost per iteration: the preset's constant, or the GPU's calibrated
        # one; the batch terms only where the preset has them (the default has none, so its
        # iterations are priced by exactly the expression they always were).
        self.overhead = overhead if overhead is not None else CALIBRATED
        self._overhead = (eff.iteration_overhead_s if self.overhead.constant_s is None
                          else self.overhead.constant_s)
        self._per_sequence = self.overhead.per_sequence_s
        self._launch = self.overhead.launch_per_layer_s
        self._batch_overhead = bool(self._per_sequence or self._launch)
        self._table = np.zeros(0)
        self._table_list: list[float] = []
        # Decode attention is memory-bound for every context when reading a context token's
        # K and V takes at least as long as its FLOPs (decode_stretch_time).
        self._stretch_parts: dict[int, tuple] = {}  # decode_seqs -> decode_stretch_time's scalars
        self._decode_memory_bound = self._attn_per_context >= self._attn_flops >= 0 and self._attn_per_token >= 0

    def token_layer_time(self, tokens) -> np.ndarray:
        """Seconds per layer of everything that depends only on the token count T: GEMMs,
        element-wise kernels and the two all-reduces (numpy array of T)."""
        tokens = np.asarray(tokens, dtype=float)
        overlap, floor = self._overlap, self._floor
        layer = np.full(tokens.shape, self._elementwise_fixed)
        for rows, per_row in self._elementwise:
            layer = layer + np.maximum(tokens, rows) * per_row
        if self.comm is not None:
            layer = layer + 2 * self.comm.all_reduce(tokens * self._allreduce_bytes_per_token, self.tp)
        for compute, weights, activations in self._dense_gemms:
            tc = compute * tokens
            tm = weights + activations * tokens
            layer = layer + (np.maximum(tc, tm) + overlap * np.minimum(tc, tm) + floor)
        if self._moe:
            touched = expected_experts_touched(tokens, self._num_experts, self._k)
            for compute, weights, activations in self._expert_gemms:
                tc = compute * tokens
                tm = weights * touched + activations * tokens
                layer = layer + (np.maximum(tc, tm) + overlap * np.minimum(tc, tm) + floor)
        return layer

    def _grow(self, tokens: int) -> None:
        size = max(1024, 1 << int(tokens).bit_length())
        self._table = self.token_layer_time(np.arange(size, dtype=float))
        self._table_list = self._table.tolist()

    def _token_part(self, tokens: float) -> float:
        if tokens.is_integer() and tokens < _TABLE_CAP:
            if tokens >= len(self._table_list):
                self._grow(int(tokens))
            return self._table_list[int(tokens)]
        return float(self.token_layer_time(np.array([tokens]))[0])

    def _token_parts(self, tokens: np.ndarray) -> np.ndarray:
        if tokens.size and np.all(np.mod(tokens, 1.0) == 0) and tokens.min() >= 0 and tokens.max() < _TABLE_CAP:
            top = int(tokens.max())
            if top >= len(self._table):
                self._grow(top)
            return self._table[tokens.astype(np.int64)]
        return self.token_layer_time(tokens)

    def iteration_time(self, prefill_tokens, prefill_attention_work, decode_seqs, decode_context):
        """Seconds for one engine iteration (continuous batching, chunked prefill).

        prefill_tokens: tokens of prefill chunks in this iteration; prefill_attention_work:
        sum over chunks of n*(p + n/2) for a chunk of n tokens after p cached tokens;
        decode_seqs: number of decoding sequences (1 token each); decode_context: sum of their
        context lengths. Each argument may be a scalar or a numpy array (broadcast); an
        iteration with no tokens costs 0.
        """
        # the dispatch of _price, inlined: this is the simulator's hottest call
        if (
            type(prefill_tokens) in _SCALARS
            and type(prefill_attention_work) in _SCALARS
            and type(decode_seqs) in _SCALARS
            and type(decode_context) in _SCALARS
        ):
            if prefill_tokens + decode_seqs <= 0:
                return 0.0
            pt, ds = float(prefill_tokens), float(decode_seqs)
            return self._time(pt, float(prefill_attention_work), ds, float(decode_context),
                              self._token_part(pt + ds), max, min, self._layers, True)
        return self._price(self._layers, True, prefill_tokens, prefill_attention_work, decode_seqs, decode_context)

    def decode_stretch_time(self, decode_seqs: int, first_context: int, iterations: int) -> np.ndarray:
        """Seconds of each of ``iterations`` decode-only iterations of ``decode_seqs`` sequences
        whose contexts sum to ``first_context`` in the first and grow by ``decode_seqs`` per
        iteration (a stretch, chironsim/sim/engine/stretch.py): bit for bit
        ``iteration_time(0, 0.0, decode_seqs, contexts)``.

        Faster by what it knows of its arguments. The contexts are non-negative, so where
        decode attention is memory-bound per context (``_decode_memory_bound``) the memory term
        ``fl(fl(a·c) + t)`` is at least the compute term ``fl(b·c)`` for every context ``c``
        (``a ≥ b ≥ 0``, ``t ≥ 0``; rounding is monotone): ``maximum``/``minimum`` return those
        two terms as they are and are skipped. The rest is the same operations on the same
        operands in the same order (``x + y`` and ``x·y`` commute exactly in IEEE arithmetic),
        done in place on two arrays instead of a new array per operation."""
        contexts = np.arange(first_context, first_context + decode_seqs * iterations, decode_seqs)
        if not (self._decode_memory_bound and decode_seqs > 0 and first_context >= 0):
            return np.asarray(self.iteration_time(0, 0.0, decode_seqs, contexts), dtype=float)
        parts = self._stretch_parts.get(decode_seqs)
        if parts is None:  # the scalars of a batch of decode_seqs decodes, computed once
            ds = float(decode_seqs)
            base, head = self._batch_parts(0.0, 0.0, ds, self._token_part(ds), max, min, True)
            parts = self._stretch_parts[decode_seqs] = (
                self._attn_per_token * ds, self._floor * (ds > 0), base, head,
                self._batch_overhead_time(0.0, ds, self._layers, min) if self._batch_overhead else None)
        per_token, floor, base, head, batch_overhead = parts
        # _with_context: layer = base + (max(tc, tm) + overlap * min(tc, tm) + floor * (ds > 0));
        # an int64 array times a float is the float64 array's product (contexts < 2**53)
        tm = contexts * self._attn_per_context
        tm += per_token
        tc = contexts * self._attn_flops
        tc *= self._overlap
        tm += tc
        tm += floor
        tm += base
        # layers * layer + head + overhead
        tm *= self._layers
        tm += head
        tm += self._overhead
        if batch_overhead is not None:
            tm += batch_overhead
        return tm

    def stage_time(self, layers: int, lm_head: bool, prefill_tokens, prefill_attention_work, decode_seqs,
                   decode_context):
        """Seconds for one pipeline stage of `layers` layers running one micro-batch (KunServe's
        fused groups, issue 10 item 1; reference/README.md, KunServe, "Pipeline execution").

        The same roofline as `iteration_time` (same table, same expression, same scalar/array
        parity) with `layers` layers instead of all of them and the LM head only where
        `lm_head` (the last stage). Each stage pays the per-iteration overhead once: it is one
        engine step on its own GPUs (input preparation and kernel launches); a per-layer launch
        cost counts the stage's own layers. So over the stages of one split, sum(stage_time) ==
        iteration_time + (stages - 1) x overhead (its constant and per-sequence terms; a launch
        term splits with the layers), up to the rounding of splitting `L x layer` into
        per-stage products. The embedding lookup is
        not priced here or in `iteration_time`. The activation hops between stages are priced by
        chironsim.perf.pipeline.
        """
        if not 0 <= layers <= self._layers or type(layers) is not int:
            raise ConfigError(f"a stage holds 0..{self._layers} whole layers of {self.model.name}, got {layers!r}")
        return self._price(layers, lm_head, prefill_tokens, prefill_attention_work, decode_seqs, decode_context)

    def _price(self, layers: int, lm_head: bool, prefill_tokens, prefill_attention_work, decode_seqs, decode_context):
        if (
            type(prefill_tokens) in _SCALARS
            and type(prefill_attention_work) in _SCALARS
            and type(decode_seqs) in _SCALARS
            and type(decode_context) in _SCALARS
        ):
            if prefill_tokens + decode_seqs <= 0:
                return 0.0
            pt, ds = float(prefill_tokens), float(decode_seqs)
            return self._time(pt, float(prefill_attention_work), ds, float(decode_context),
                              self._token_part(pt + ds), max, min, layers, lm_head)
        if (
            type(prefill_tokens) in _SCALARS
            and type(prefill_attention_work) in _SCALARS
            and type(decode_seqs) in _SCALARS
        ):
            # A stretch of decode iterations (StretchPlanner): the batch is fixed and only the
            # contexts grow, so the token-count part is one table entry. The same entry and the
            # same element-wise arithmetic as the general path below, without broadcasting
            # three constant arguments to the contexts' shape (bit-identical, tested).
            pt, ds = float(prefill_tokens), float(decode_seqs)
            dc = np.asarray(decode_context, dtype=float)
            if pt + ds <= 0:
                return np.zeros(dc.shape) if dc.ndim else 0.0
            base, head = self._batch_parts(pt, float(prefill_attention_work), ds, self._token_part(pt + ds),
                                           max, min, lm_head)
            result = self._with_context(base, head, ds, dc, np.maximum, np.minimum, layers)
            if self._batch_overhead:
                result = result + self._batch_overhead_time(pt, ds, layers, min)
            return float(result) if np.ndim(result) == 0 else result
        args = (prefill_tokens, prefill_attention_work, decode_seqs, decode_context)
        arrays = np.broadcast_arrays(*[np.asarray(a, dtype=float) for a in args])
        tokens = arrays[0] + arrays[2]
        live = tokens > 0
        per_token = self._token_parts(np.where(live, tokens, 0.0))
        result = np.where(live, self._time(*arrays, per_token, np.maximum, np.minimum, layers, lm_head), 0.0)
        return float(result) if result.ndim == 0 else result

    def _time(self, pt, paw, ds, dc, per_token, maximum: Callable, minimum: Callable, layers: int, lm_head: bool):
        base, head = self._batch_parts(pt, paw, ds, per_token, maximum, minimum, lm_head)
        result = self._with_context(base, head, ds, dc, maximum, minimum, layers)
        if self._batch_overhead:
            result = result + self._batch_overhead_time(pt, ds, layers, minimum)
        return result

    def _batch_overhead_time(self, pt, ds, layers: int, minimum: Callable):
        """The engine overhead's batch terms (chironsim/perf/overhead.py): per sequence that
        samples a token (every decode, and one per iteration holding prefill tokens, as the LM
        head counts them), and without CUDA graphs the per-layer launch cost of an iteration
        that decodes."""
        term = self._per_sequence * (ds + minimum(pt, 1.0))
        if self._launch:
            term = term + self._launch * layers * (ds > 0)
        return term

    def _batch_parts(self, pt, paw, ds, per_token, maximum: Callable, minimum: Callable, lm_head: bool):
        """What does not depend on the decode contexts: a layer's token-count part plus its
        prefill attention, and the LM head (None without it). Split from the context part so
        that a stretch, whose batch is fixed, evaluates these once with builtin max/min on
        floats (the same doubles as numpy's; numpy's scalar dispatch was a third of pricing
        a stretch) and only the context part on arrays."""
        overlap, floor = self._overlap, self._floor
        # prefill attention: compute on query-key pairs, memory on KV read per query tile + writes
        tc = self._attn_flops * paw
        tm = self._attn_read_per_work * paw + self._attn_per_token * pt
        base = per_token + (maximum(tc, tm) + overlap * minimum(tc, tm) + floor * (pt > 0))
        if not lm_head:
            return base, None
        # LM head on the tokens that are sampled: every decode, and the last token of a prefill
        compute, weights, activations = self._lm_head
        sampled = ds + minimum(pt, 1.0)
        tc = compute * sampled
        tm = weights + activations * sampled
        return base, maximum(tc, tm) + overlap * minimum(tc, tm) + floor

    def _with_context(self, base, head, ds, dc, maximum: Callable, minimum: Callable, layers: int):
        """The decode attention on top of ``base``, then all layers, the head and the overhead,
        in the order the one-expression form added them (bit-identical)."""
        overlap, floor = self._overlap, self._floor
        # decode attention: every sequence reads its whole context's K and V
        tc = self._attn_flops * dc
        tm = self._attn_per_context * dc + self._attn_per_token * ds
        layer = base + (maximum(tc, tm) + overlap * minimum(tc, tm) + floor * (ds > 0))
        if head is None:
            return layers * layer + self._overhead
        return layers * layer + head + self._overhead
