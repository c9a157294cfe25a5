"""KV capacity of a fused group: what a KunServe parameter drop turns into KV cache.

A group of g identical instances (each `tp` GPUs) drops its replicated layers: instance i keeps
layers [i·L/g, (i+1)·L/g) (chironsim.perf.pipeline.stage_layers) and the weight memory of the
others becomes KV space (issue 10 item 1; reference/README.md, KunServe, "Drop"; derivation in
reference/llumnix_kunserve.md B.1, "Capacity model"). Each GPU then stores 1/g of every token's
KV, so the pooled capacity is

    C_after = g·M_kv/κ + (g−1)·W/κ  tokens,

M_kv the KV memory of one member before the drop, κ the KV bytes per token of the whole model,
and W the bytes of the member's per-layer weights (its whole layer stack: attention,
MLP/experts, MoE router and the two norms of every layer). Only (g−1)/g of W is dropped on each
member. The token embeddings, the LM head and the final norm stay where they are, on every
member (reference README: "embeddings and LM head stay"): they are not in W.

Units: the formula is a ratio, so it reads the same per GPU (M_kv, W and κ of one GPU: the
member's values ÷ tp, with κ counting the KV heads a GPU holds, replicated when tp > KV heads)
or per instance (summed over the member's tp GPUs). This module works per instance, exactly as
chironsim.perf.memory does: M_kv = memory × utilisation × tp − all weights − activation reserve,
blocks of `block_size` tokens over all layers and all tp GPUs (`kv_block_bytes`). The activation
reserve is kept after the drop (each stage still runs forward passes).
"""

from __future__ import annotations

from chironsim.catalog.specs import GPU, Model
from chironsim.errors import ConfigError
from chironsim.perf.memory import estimate_activation_bytes, kv_block_bytes, kv_capacity_blocks
from chironsim.perf.pipeline import stage_layers
from chironsim.perf.precision import BF16, Precision
from chironsim.perf.precision import layer_weight_bytes as _layer_weight_bytes
from chironsim.perf.precision import model_weight_bytes


def layer_weight_bytes(model: Model, precision: Precision = BF16) -> int:
    """Bytes of one decoder layer's weights over a whole replica (every expert counted): what a
    member frees per layer it drops; ÷ tp per GPU. At `precision`'s weight dtype (the linear
    layers; norms and router stay BF16)."""
    return _layer_weight_bytes(model, precision)


def droppable_weight_bytes(model: Model, precision: Precision = BF16) -> int:
    """W: bytes of the per-layer weights of one member (all L layers), over its tp GPUs."""
    return model.num_layers * layer_weight_bytes(model, precision)


def fused_capacity_tokens(kv_bytes: float, layer_stack_bytes: float, kv_bytes_per_token: float,
                          group_size: int) -> float:
    """C_after = g·M_kv/κ + (g−1)·W/κ tokens (reference B.1), all three in the same unit (per
    GPU or per instance). Before the drop the group held g·M_kv/κ in g separate pools."""
    if group_size < 1 or kv_bytes_per_token <= 0:
        raise ConfigError(f"need group_size >= 1 and kv_bytes_per_token > 0, got {group_size}, {kv_bytes_per_token}")
    return (group_size * kv_bytes + (group_size - 1) * layer_stack_bytes) / kv_bytes_per_token


def member_kv_bytes(model: Model, gpu: GPU, tp: int, gpu_memory_utilization: float = 0.9,
                    activation_reserve_bytes: int | None = None, precision: Precision = BF16) -> float:
    """M_kv of one member, over its tp GPUs: chironsim.perf.memory's free memory before the
    drop (also checks, with the same message, that the model fits at all)."""
    kv_capacity_blocks(model, gpu, tp, gpu_memory_utilization, 1, activation_reserve_bytes, precision)
    reserve = estimate_activation_bytes(model, tp) if activation_reserve_bytes is None else activation_reserve_bytes
    return gpu.memory_bytes * gpu_memory_utilization * tp - model_weight_bytes(model, precision) - reserve


def fused_kv_capacity_blocks(model: Model, gpu: GPU, tp: int, group_size: int,
                             gpu_memory_utilization: float = 0.9, block_size: int = 16,
                             activation_reserve_bytes: int | None = None, precision: Precision = BF16) -> int:
    """Blocks of `block_size` tokens (each over all L layers, as before the drop) a fused group
    of `group_size` members holds: what the group's allocator resizes to.

    Member i keeps L_i layers, so one block occupies L_i/L of a full block's bytes on it, and
    its KV memory grows by the L − L_i layers it dropped; the group holds as many blocks as its
    tightest member. When g divides L (every member equal) this is floor(C_after / block_size)
    with C_after in per-instance bytes, and never less than g × the blocks of one member before
    the drop (floor(g·x) ≥ g·floor(x)).
    """
    layers = stage_layers(model.num_layers, group_size)
    free = member_kv_bytes(model, gpu, tp, gpu_memory_utilization, activation_reserve_bytes, precision)
    full_block = kv_block_bytes(model, block_size, tp, precision)
    per_layer_block = full_block // model.num_layers  # exact: kv_block_bytes is a multiple of L
    per_layer = layer_weight_bytes(model, precision)
    return min(int((free + (model.num_layers - kept) * per_layer) // (kept * per_layer_block))
               for kept in layers)


def fused_blocks_gained(model: Model, gpu: GPU, tp: int, group_size: int, gpu_memory_utilization: float = 0.9,
                        block_size: int = 16, activation_reserve_bytes: int | None = None,
                        precision: Precision = BF16) -> int:
    """Blocks a drop adds to a group of `group_size` members: fused capacity − g × one member's
    (what the greedy drop plan weighs against the memory it needs)."""
    before = kv_capacity_blocks(model, gpu, tp, gpu_memory_utilization, block_size, activation_reserve_bytes,
                                precision)
    return fused_kv_capacity_blocks(model, gpu, tp, group_size, gpu_memory_utilization, block_size,
                                    activation_reserve_bytes, precision) - group_size * before
