"""KV-cache capacity of a replica: what is left of GPU memory after weights and activations.

Mirrors vLLM's accounting: capacity = (memory x utilisation x tp - weights - activation
reserve) / (block tokens x KV bytes per token). A model that does not fit is a user mistake
(wrong GPU or tp), so it raises ChironError with the numbers rather than returning 0 blocks.
"""

from __future__ import annotations

import math

from chironsim.catalog.specs import GPU, Model
from chironsim.errors import ChironError, ConfigError
from chironsim.perf.precision import BF16, Precision, model_weight_bytes
from chironsim.perf.roofline import DTYPE_BYTES

_GIB = 2**30
_LOGIT_BYTES = 4  # the sampler materialises logits in FP32


def kv_block_bytes(model: Model, block_size: int, tp: int = 1, precision: Precision = BF16) -> int:
    """Bytes of one KV block summed over the tp GPUs (KV heads are replicated when tp > kv heads),
    at the KV cache's element size."""
    per_token = 2 * model.num_layers * model.kv_heads_per_gpu(tp) * tp * model.head_dim * precision.kv_bytes
    return block_size * per_token


def estimate_activation_bytes(model: Model, tp: int, max_num_batched_tokens: int = 2048,
                             max_num_seqs: int = 256) -> int:
    """Peak transient memory of one forward pass, summed over the tp GPUs.

    The largest live tensors are the residual stream and hidden state (2 x tokens x hidden),
    the MLP's gate/up output and activation (3 x tokens x experts_per_token x intermediate / tp
    per GPU), and FP32 logits for the sampled rows (up to max_num_seqs x vocab / tp per GPU).
    vLLM measures this by profiling a dummy batch of max_num_batched_tokens; this is its
    shape-based estimate.
    """
    k = model.experts_per_token if model.is_moe else 1
    tokens = max_num_batched_tokens
    per_gpu = tokens * DTYPE_BYTES * (2 * model.hidden_size + 3 * k * model.intermediate_size / tp)
    per_gpu += min(tokens, max_num_seqs) * model.vocab_size / tp * _LOGIT_BYTES
    return int(math.ceil(per_gpu * tp))


def kv_capacity_blocks(model: Model, gpu: GPU, tp: int, gpu_memory_utilization: float = 0.9,
                       block_size: int = 16, activation_reserve_bytes: int | None = None,
                       precision: Precision = BF16) -> int:
    """KV blocks a replica of `model` on `tp` x `gpu` can hold (weights and KV cache at
    `precision`'s element sizes; activations in BF16)."""
    if tp < 1 or block_size < 1:
        raise ConfigError(f"tp and block_size must be >= 1, got tp={tp}, block_size={block_size}")
    if not 0.0 < gpu_memory_utilization <= 1.0:
        raise ConfigError(f"gpu_memory_utilization must be in (0, 1], got {gpu_memory_utilization}")
    reserve = estimate_activation_bytes(model, tp) if activation_reserve_bytes is None else activation_reserve_bytes
    budget = gpu.memory_bytes * gpu_memory_utilization * tp
    weights = model_weight_bytes(model, precision)
    free = budget - weights - reserve
    block = kv_block_bytes(model, block_size, tp, precision)
    if free < block:
        raise ChironError(
            f"{model.name} does not fit on {tp} x {gpu.name}: {budget / _GIB:.1f} GiB usable "
            f"({gpu_memory_utilization:.0%} of {tp} x {gpu.memory_bytes / _GIB:.0f} GiB) minus "
            f"{weights / _GIB:.1f} GiB of {'FP8 ' if precision.weights == 'fp8' else ''}weights and "
            f"{reserve / _GIB:.1f} GiB of activations leaves "
            f"{free / _GIB:.2f} GiB, less than one {block_size}-token "
            f"{'FP8 ' if precision.kv_cache == 'fp8' else ''}KV block ({block / 2**20:.1f} MiB); "
            "use more GPUs (tp) or a larger GPU"
        )
    return int(free // block)
