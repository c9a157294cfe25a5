"""Data-movement times: KV swap over PCIe, weight loading, KV migration over the network.

Each is bytes / bandwidth (+ a fixed latency where the mechanism has one). Bandwidths are the
catalog's theoretical link rates; pass a lower bandwidth where a measured one is known.
"""

from __future__ import annotations

from chironsim.catalog.specs import GPU
from chironsim.errors import ConfigError


def swap_time(num_blocks, block_bytes: float, gpu: GPU, tp: int):
    """Seconds to copy `num_blocks` KV blocks between GPU and host memory over PCIe.

    `block_bytes` is the block's size summed over the replica (perf.memory.kv_block_bytes);
    each of the tp GPUs moves its 1/tp shard over its own PCIe link at the same time.
    """
    if tp < 1:
        raise ConfigError(f"tp must be >= 1, got {tp}")
    return num_blocks * block_bytes / tp / gpu.host_link_bytes_per_s


def weight_load_seconds(weight_bytes: float, bandwidth_bytes_per_s: float) -> float:
    """Seconds to load `weight_bytes` from a store that delivers `bandwidth_bytes_per_s`."""
    if bandwidth_bytes_per_s <= 0:
        raise ConfigError(f"weight load bandwidth must be > 0 bytes/s, got {bandwidth_bytes_per_s}")
    return weight_bytes / bandwidth_bytes_per_s


def kv_transfer_time(num_blocks, block_bytes: float, bandwidth: float, latency: float):
    """Seconds for one KV transfer (e.g. a migration stage): latency + bytes / bandwidth."""
    if bandwidth <= 0 or latency < 0:
        raise ConfigError(f"KV transfer needs bandwidth > 0 and latency >= 0, got {bandwidth}, {latency}")
    return latency + num_blocks * block_bytes / bandwidth
