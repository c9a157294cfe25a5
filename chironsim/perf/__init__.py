"""Latency and memory models: pure functions of catalog entries and batch shapes (no SimPy)."""

from chironsim.perf.comm import CommCurve, CommModel
from chironsim.perf.drop import droppable_weight_bytes, fused_capacity_tokens, fused_kv_capacity_blocks
from chironsim.perf.efficiency import Efficiency, comm_for_gpu
from chironsim.perf.exchange import kv_exchange_seconds, restore_seconds
from chironsim.perf.memory import estimate_activation_bytes, kv_block_bytes, kv_capacity_blocks
from chironsim.perf.precision import BF16, Precision, model_weight_bytes
from chironsim.perf.pipeline import cycle_time, micro_batch_time, stage_layers
from chironsim.perf.roofline import IterationTimeModel, expected_experts_touched, prefill_attention_work
from chironsim.perf.transfer import kv_transfer_time, swap_time, weight_load_seconds

__all__ = [
    "BF16",
    "CommCurve",
    "CommModel",
    "Efficiency",
    "comm_for_gpu",
    "cycle_time",
    "droppable_weight_bytes",
    "fused_capacity_tokens",
    "fused_kv_capacity_blocks",
    "IterationTimeModel",
    "estimate_activation_bytes",
    "expected_experts_touched",
    "kv_block_bytes",
    "kv_capacity_blocks",
    "kv_exchange_seconds",
    "kv_transfer_time",
    "micro_batch_time",
    "model_weight_bytes",
    "Precision",
    "prefill_attention_work",
    "restore_seconds",
    "stage_layers",
    "swap_time",
    "weight_load_seconds",
]
