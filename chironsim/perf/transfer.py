"""Data-movement times: KV swap over PCIe, weight loading, KV copies between instances.

Swap and weight loading are bytes / bandwidth: the catalog's theoretical PCIe rate (the shared
profiles hold no host-device copies to fit) and the configured weight-store rate. A KV copy
between instances (`KVCopy`, a migration stage) is either bytes / a configured bandwidth (Gloo,
as Llumnix's released code sends blocks) or the GPU's measured NCCL send/recv curve
(chironsim/perf/comm.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from chironsim.catalog.specs import GPU
from chironsim.errors import ConfigError
from chironsim.perf.comm import CommModel


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


@dataclass(frozen=True)
class KVCopy:
    """Seconds to copy KV blocks from one instance's GPUs to another's (a migration stage's
    transfer, without its fixed cost). Each GPU of a tensor-parallel replica sends its shard
    of every block over its own path at once. Either at a fixed ``bandwidth`` (bytes/s of one
    GPU's path; Gloo) or, with ``comm``, at the GPU's measured NCCL send/recv curve, whose
    small-message latency and size-dependent bandwidth come from the profiles."""

    block_bytes: float  # one block over the whole replica
    tp: int
    bandwidth: float | None = None
    comm: CommModel | None = None
    same_node: bool = False

    def __post_init__(self) -> None:
        if (self.bandwidth is None) == (self.comm is None):
            raise ConfigError("a KV copy needs either a bandwidth or communication curves, not both")
        if self.bandwidth is not None and self.bandwidth <= 0:
            raise ConfigError(f"KV copy bandwidth must be > 0 bytes/s, got {self.bandwidth}")
        object.__setattr__(self, "_per_block",
                           self.block_bytes / self.tp / self.bandwidth if self.bandwidth else 0.0)

    def seconds(self, blocks: int) -> float:
        if self.comm is None:
            return blocks * self._per_block
        return self.comm.send_recv(blocks * self.block_bytes / self.tp, self.same_node) if blocks > 0 else 0.0
