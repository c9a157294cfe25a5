"""Config models for what the simulator builds: engines, instance lifecycles, pools.

Plain pydantic (no SimPy), so the experiment layer can compose and validate them at the
boundary. Defaults follow vLLM's engine defaults where vLLM has one.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from chironsim.config_base import ConfigModel, InstanceCount, limited
from chironsim.errors import ConfigError
from chironsim.limits import (
    MAX_BANDWIDTH_GBPS,
    MAX_BLOCK_SIZE,
    MAX_ENGINE_OVERHEAD_S,
    MAX_ENGINE_OVERHEAD_TERM_S,
    MAX_INSTANCES,
    MAX_LIFECYCLE_S,
    MAX_MEMORY_GIB,
    MAX_MIGRATION_STAGES,
    MAX_NUM_SEQS,
    MAX_REQUESTS,
    MAX_STAGE_LATENCY_S,
    MAX_TOKENS,
    MIN_BANDWIDTH_GBPS,
)
from chironsim.perf.overhead import DEFAULT_PRESET, EngineOverhead, engine_preset, engine_presets

# Bounded number types (see chironsim.limits for why each bound is what it is).
Sequences = limited(int, MAX_NUM_SEQS, "sequences", ge=1)
Tokens = limited(int, MAX_TOKENS, "tokens", ge=1)
BlockTokens = limited(int, MAX_BLOCK_SIZE, "tokens", ge=1)
MemoryGiB = limited(float, MAX_MEMORY_GIB, "GiB", ge=0)
LifecycleSeconds = limited(float, MAX_LIFECYCLE_S, "s", ge=0)
Bandwidth = limited(float, MAX_BANDWIDTH_GBPS, "GB/s", gt=0, floor=MIN_BANDWIDTH_GBPS)
StageCount = limited(int, MAX_MIGRATION_STAGES, "stages", ge=1)
BlockCount = limited(int, MAX_TOKENS, "blocks", ge=0)
StageLatency = limited(float, MAX_STAGE_LATENCY_S, "s", ge=0)
QueueBound = limited(int, MAX_REQUESTS, "requests", ge=1)
OverheadSeconds = limited(float, MAX_ENGINE_OVERHEAD_S, "s", ge=0)
OverheadTermSeconds = limited(float, MAX_ENGINE_OVERHEAD_TERM_S, "s", ge=0)


class OverheadConfig(ConfigModel):
    """Explicit engine-overhead terms; each one set replaces the preset's value
    (chironsim/perf/overhead.py; docs/latency-model.md, "Engine overhead and batching
    policy")."""

    constant_s: OverheadSeconds | None = Field(
        None, description="fixed cost per iteration (s); default the preset's (for the default "
        "preset, the GPU's calibrated iteration_overhead_s)")
    per_sequence_s: OverheadTermSeconds | None = Field(
        None, description="cost per sequence that samples a token in the iteration (s)")
    per_layer_launch_s: OverheadTermSeconds | None = Field(
        None, description="kernel-launch cost per layer of an iteration that decodes, when "
        "cuda_graphs is false (s)")


class EngineConfig(ConfigModel):
    """Knobs of one serving engine (vLLM-style continuous batching with chunked prefill by
    default; ``preset`` names another engine's overhead and batching policy)."""

    preset: str = Field(
        DEFAULT_PRESET, description="engine preset (chironsim/catalog/engines.yaml): its "
        "per-iteration overhead and batching policy; default, vllm, vllm-v0, sglang, tensorrt-llm")
    scheduler: Literal["chunked", "prefill_first"] | None = Field(
        None, description="batching policy: 'chunked' (decodes and prefill chunks share each "
        "iteration's token budget) or 'prefill_first' (prefill-only iterations first, never mixed "
        "with decodes); default the preset's")
    cuda_graphs: bool = Field(
        True, description="false: iterations that decode pay the preset's per-layer kernel-launch "
        "cost (vLLM's enforce_eager)")
    overhead: OverheadConfig = Field(
        OverheadConfig(), description="explicit overhead terms, replacing the preset's")

    max_num_seqs: Sequences = Field(256, description="most sequences in one batch")
    max_num_batched_tokens: Tokens = Field(8192, description="token budget per iteration")
    block_size: BlockTokens = Field(16, description="tokens per KV block")
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    watermark: float = Field(0.01, ge=0, lt=1, description="fraction of KV blocks admissions leave free")
    preemption_mode: Literal["recompute", "swap"] = "recompute"
    swap_space_gb: MemoryGiB = Field(16.0, description="host memory for swapped KV per GPU (GiB)")
    activation_reserve_gb: MemoryGiB | None = Field(
        None, description="GPU memory kept for activations; None = the perf model's default"
    )
    fast_forward: bool = Field(
        True, description="advance runs of identical decode iterations in one step (exact)"
    )
    priority_scheduling: bool = Field(
        True, description="admit waiting requests by class priority and preempt the lowest "
        "priority first (vLLM with priorities); off: first come, first served for every class "
        "and the latest arrival is preempted first, whatever its class (a priority-agnostic "
        "engine, e.g. Llumnix-base)")

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, name: str) -> str:
        if name not in engine_presets():
            raise ValueError(f"unknown engine preset {name!r}; presets: "
                             f"{', '.join(sorted(engine_presets()))} (chironsim/catalog/engines.yaml)")
        return name

    @model_validator(mode="after")
    def _overhead_resolves(self) -> "EngineConfig":
        try:
            self.overhead_model()
        except ConfigError as err:
            raise ValueError(str(err)) from None
        return self

    @property
    def batching(self) -> str:
        """The batching policy in effect: ``scheduler`` if set, else the preset's."""
        return self.scheduler or engine_preset(self.preset).scheduler

    def overhead_model(self) -> EngineOverhead:
        """The overhead terms in effect: the preset's, each explicit ``overhead`` key replacing
        its value; the launch term only without CUDA graphs."""
        explicit = self.overhead
        return engine_preset(self.preset).overhead(
            self.cuda_graphs, explicit.constant_s, explicit.per_sequence_s, explicit.per_layer_launch_s)


class LifecycleConfig(ConfigModel):
    """Cold-start model: node acquisition, then weights at a shared store bandwidth, then start-up."""

    provision_s: LifecycleSeconds = Field(30.0, description="time to acquire a node (s)")
    load_bandwidth_gbps: Bandwidth = Field(
        2.0, description="weight store bandwidth (GB/s), shared by instances loading at once"
    )
    engine_startup_s: LifecycleSeconds = Field(10.0, description="engine start-up after weights load (s)")


#: Fixed cost of one migration stage (s) per backend where ``alpha_s`` is not set
#: (MigrationConfig's docstring gives the sources).
MIGRATION_ALPHA_S = {"gloo": 0.006, "nccl": 0.0014}


class MigrationConfig(ConfigModel):
    """Moving a running request and its KV cache between instances (Llumnix's mechanism).

    Defaults from ``reference/llumnix_kunserve.md`` A.1: the released code's ``max_stages`` 3
    and ``last_stage_max_blocks`` 4 (commit ``37d8e5ea``, the version closest to the paper;
    v0.1.0 uses 16), and a stage cost fitted to the measured Gloo transfers of PR #10
    (α ≈ 5–7 ms, ≈ 4.5 GB/s). One migration out of and into an instance at a time as in
    ``37d8e5ea``. The bandwidth is the migration path's own, separate from
    ``kv_transfer_gbps`` (saved KV moved by eviction and restore).

    ``backend: nccl`` prices a stage's copy with the GPU's measured NCCL send/recv curve
    (chironsim/perf/comm.py; across nodes by default, ``nccl_path: nvlink`` for instances on
    one node) instead of ``bandwidth_gbps``, and its stage cost defaults to 1.4 ms: the
    intercept of the NCCL transfers of the same PR #10 (6.5 / 8.3 / 18.5 ms for 8 / 16 / 32
    blocks of 8 MiB, a least-squares line of 1.4 ms + 0.52 ms a block).
    """

    mode: Literal["live", "blocking", "recompute"] = Field(
        "live", description="'live': multi-stage copy while the request keeps decoding, then a "
        "short stop-and-copy (Llumnix); 'blocking': stop, copy everything, resume; "
        "'recompute': stop, drop the KV, recompute it on the destination (the paper's baselines)")
    max_stages: StageCount = Field(3, description="stages before a live migration gives up")
    last_stage_max_blocks: BlockCount = Field(
        4, description="blocks left to copy at or below which the request stops for the "
        "final copy")
    backend: Literal["gloo", "nccl"] = Field(
        "gloo", description="how blocks are sent: 'gloo' (Llumnix's released backend) at "
        "bandwidth_gbps, or 'nccl' at the GPU's measured send/recv curve")
    nccl_path: Literal["network", "nvlink"] = Field(
        "network", description="with backend nccl: instances on different nodes ('network') "
        "or on one node ('nvlink')")
    alpha_s: StageLatency | None = Field(
        None, description="fixed cost of one stage (s); default 0.006 with gloo, 0.0014 with nccl")
    bandwidth_gbps: Bandwidth = Field(4.5, description="KV copy bandwidth (GB/s) of the gloo backend")
    max_out: Sequences = Field(1, description="migrations out of one instance at a time")
    max_in: Sequences = Field(1, description="migrations into one instance at a time")

    @model_validator(mode="after")
    def _backend_settings(self) -> "MigrationConfig":
        # by value, not by which keys were given: a resolved config written out with its
        # defaults (a sweep's point, a run folder's config) must read back
        fields = type(self).model_fields
        if self.backend == "nccl" and self.bandwidth_gbps != fields["bandwidth_gbps"].default:
            raise ValueError("bandwidth_gbps is the gloo backend's; backend nccl copies at the "
                             "GPU's measured send/recv curve (remove one of the two)")
        if self.backend == "gloo" and self.nccl_path != fields["nccl_path"].default:
            raise ValueError("nccl_path applies to backend nccl only")
        return self

    @property
    def stage_alpha_s(self) -> float:
        """The fixed cost of one stage in effect: ``alpha_s``, else the backend's default."""
        return MIGRATION_ALPHA_S[self.backend] if self.alpha_s is None else self.alpha_s


class FusionConfig(ConfigModel):
    """A fused group's data movement (KunServe's parameter drop and restore; the mechanism is
    :mod:`chironsim.sim.mechanisms.fusion`). Defaults from the released code
    (``reference/llumnix_kunserve.md`` B.1 step 4 and B.2); a ``DropParameters`` /
    ``RestoreParameters`` action may override them for its group."""

    stale_requests: Literal["live", "blocking", "recompute"] = Field(
        "live", description="requests decoding when a group forms keep their KV, which moves "
        "into the group's allocator: 'live' exchanges it while the group serves, at most "
        "exchange_batch_size requests per step, each request paused until its exchange lands "
        "(the code's livereshard); 'blocking': every exchange before the group's first "
        "iteration (reshard); 'recompute': drop their KV and re-prefill. Restore converts "
        "requests back the same way ('recompute': they re-prefill after the split)")
    exchange_batch_size: Sequences = Field(
        8, description="stale requests exchanged per pipeline step (the code's default)")
    restore_batch_size: Sequences = Field(
        8, description="requests converted back per step while restoring (the code's default)")


class PoolConfig(ConfigModel):
    """One pool of identical instances."""

    instances: InstanceCount = Field(1, description="instances at time 0 (warm, already ready)")
    tp: int = Field(1, ge=1, description="tensor-parallel degree (GPUs per instance)")
    gpu: str | None = Field(None, description="GPU name; default the cluster's")
    model: str | None = Field(None, description="model name; default the cluster's")
    classes: list[str] | None = Field(None, description="request classes this pool serves; None = all")
    min_instances: InstanceCount = 0
    max_instances: InstanceCount = Field(
        MAX_INSTANCES, description="most instances the pool may hold (default: the cap per pool)")
    engine: EngineConfig | None = None
    dtype: Literal["bf16", "fp8"] | None = Field(
        None, description="weights of the linear layers: bf16, or fp8 (W8A8 at the GPU's FP8 "
        "peak; a GPU without FP8 tensor cores is a config error); default the cluster's")
    kv_cache_dtype: Literal["auto", "fp8"] | None = Field(
        None, description="KV cache elements: auto (BF16, the activation dtype) or fp8 (one "
        "byte, any GPU); default the cluster's")
    max_queue: QueueBound | None = Field(
        None, description="admission limit: an arriving request finds at most this many "
        "requests waiting where it would wait (the instance the router picked, or the pool's "
        "own queue while no instance takes it); otherwise it is rejected with reason "
        "'queue full', as a load balancer with a bounded backlog does. Arrivals only: requests "
        "moved by a policy or a mechanism are never refused, and a class's global queue "
        "(Chiron's batch queue) is not bounded. None: unbounded")
    evict_lower_priority: bool = Field(
        False, description="when a higher-priority request cannot be admitted, evict running "
        "lower-priority ones: KV saved to host memory, request back to its queue (preemptible "
        "instances under any policy; a policy that needs it, like Chiron for its mixed pool, "
        "declares it itself)")

    @model_validator(mode="after")
    def _bounds(self) -> "PoolConfig":
        if self.min_instances > self.max_instances:
            raise ValueError("min_instances must not exceed max_instances")
        if self.instances > self.max_instances:
            raise ValueError(f"instances ({self.instances}) must not exceed max_instances "
                             f"({self.max_instances}): the cap bounds the GPUs the pool holds")
        return self


class ClusterConfig(ConfigModel):
    """The cluster: default model, GPU and engine, and its named pools."""

    model: str = "llama-3-8b"
    gpu: str = "h100-sxm"
    engine: EngineConfig = EngineConfig()
    dtype: Literal["bf16", "fp8"] = Field(
        "bf16", description="weights of the linear layers (QKV, O, MLP): bf16 or fp8; "
        "embeddings, LM head, norms and router stay BF16 (chironsim/perf/precision.py)")
    kv_cache_dtype: Literal["auto", "fp8"] = Field(
        "auto", description="KV cache elements: auto (BF16) or fp8 (half the bytes)")
    lifecycle: LifecycleConfig = LifecycleConfig()
    kv_transfer_gbps: Bandwidth = Field(
        12.5, description="bandwidth (GB/s) for moving saved KV between instances "
        "(an evicted request resumed elsewhere)")
    migration: MigrationConfig = MigrationConfig()
    fusion: FusionConfig = FusionConfig()
    pools: dict[str, PoolConfig] = Field(default_factory=lambda: {"default": PoolConfig()})

    def precision_of(self, pool: str) -> tuple[str, str]:
        """(dtype, kv_cache_dtype) of a pool: its own where it sets them, else the cluster's."""
        config = self.pools[pool]
        return (config.dtype or self.dtype, config.kv_cache_dtype or self.kv_cache_dtype)

    @model_validator(mode="after")
    def _has_pools(self) -> "ClusterConfig":
        if not self.pools:
            raise ValueError("at least one pool is required")
        return self
