"""Config models for what the simulator builds: engines, instance lifecycles, pools.

Plain pydantic (no SimPy), so the experiment layer can compose and validate them at the
boundary. Defaults follow vLLM's engine defaults where vLLM has one.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from chironsim.config_base import StrictModel


class EngineConfig(StrictModel):
    """Knobs of one serving engine (vLLM-style continuous batching with chunked prefill)."""

    max_num_seqs: int = Field(256, ge=1, description="most sequences in one batch")
    max_num_batched_tokens: int = Field(8192, ge=1, description="token budget per iteration")
    block_size: int = Field(16, ge=1, description="tokens per KV block")
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    watermark: float = Field(0.01, ge=0, lt=1, description="fraction of KV blocks admissions leave free")
    preemption_mode: Literal["recompute", "swap"] = "recompute"
    swap_space_gb: float = Field(16.0, ge=0, description="host memory for swapped KV per GPU (GiB)")
    activation_reserve_gb: float | None = Field(
        None, ge=0, description="GPU memory kept for activations; None = the perf model's default"
    )
    fast_forward: bool = Field(
        True, description="advance runs of identical decode iterations in one step (exact)"
    )


class LifecycleConfig(StrictModel):
    """Cold-start model: node acquisition, then weights at a shared store bandwidth, then start-up."""

    provision_s: float = Field(30.0, ge=0, description="time to acquire a node (s)")
    load_bandwidth_gbps: float = Field(
        2.0, gt=0, description="weight store bandwidth (GB/s), shared by instances loading at once"
    )
    engine_startup_s: float = Field(10.0, ge=0, description="engine start-up after weights load (s)")


class PoolConfig(StrictModel):
    """One pool of identical instances."""

    instances: int = Field(1, ge=0, description="instances at time 0 (warm, already ready)")
    tp: int = Field(1, ge=1, description="tensor-parallel degree (GPUs per instance)")
    gpu: str | None = Field(None, description="GPU name; default the cluster's")
    model: str | None = Field(None, description="model name; default the cluster's")
    classes: list[str] | None = Field(None, description="request classes this pool serves; None = all")
    min_instances: int = Field(0, ge=0)
    max_instances: int = Field(1_000_000, ge=0)
    engine: EngineConfig | None = None
    evict_lower_priority: bool = Field(
        False, description="when a higher-priority request cannot be admitted, evict running "
        "lower-priority ones: KV saved to host memory, request back to its queue (preemptible "
        "instances, e.g. Chiron's mixed pool)")

    @model_validator(mode="after")
    def _bounds(self) -> "PoolConfig":
        if self.min_instances > self.max_instances:
            raise ValueError("min_instances must not exceed max_instances")
        if self.instances > self.max_instances:
            raise ValueError(f"instances ({self.instances}) must not exceed max_instances "
                             f"({self.max_instances}): the cap bounds the GPUs the pool holds")
        return self


class ClusterConfig(StrictModel):
    """The cluster: default model, GPU and engine, and its named pools."""

    model: str = "llama-3-8b"
    gpu: str = "h100-sxm"
    engine: EngineConfig = EngineConfig()
    lifecycle: LifecycleConfig = LifecycleConfig()
    kv_transfer_gbps: float = Field(
        12.5, gt=0, description="bandwidth (GB/s) for moving saved KV between instances "
        "(an evicted request resumed elsewhere)")
    pools: dict[str, PoolConfig] = Field(default_factory=lambda: {"default": PoolConfig()})

    @model_validator(mode="after")
    def _has_pools(self) -> "ClusterConfig":
        if not self.pools:
            raise ValueError("at least one pool is required")
        return self
