"""Latency and memory models: pure functions of catalog entries and batch shapes (no SimPy)."""

from chironsim.perf.comm import CommCurve, CommModel
from chironsim.perf.efficiency import Efficiency, comm_for_gpu
from chironsim.perf.memory import estimate_activation_bytes, kv_block_bytes, kv_capacity_blocks
from chironsim.perf.roofline import IterationTimeModel, expected_experts_touched, prefill_attention_work
from chironsim.perf.transfer import kv_transfer_time, swap_time, weight_load_seconds

__all__ = [
    "CommCurve",
    "CommModel",
    "Efficiency",
    "comm_for_gpu",
    "IterationTimeModel",
    "estimate_activation_bytes",
    "expected_experts_touched",
    "kv_block_bytes",
    "kv_capacity_blocks",
    "kv_transfer_time",
    "prefill_attention_work",
    "swap_time",
    "weight_load_seconds",
]
