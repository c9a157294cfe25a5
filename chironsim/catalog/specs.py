"""Frozen records for catalog entries: a GPU's datasheet numbers and a model's shapes.

Numbers are stored in SI units (FLOP/s, bytes, bytes/s, USD) so that the perf models never
convert units; the YAML files keep the datasheet units and the loader converts them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class GPU:
    """One accelerator as its vendor datasheet describes it (dense, not sparsity, FLOP/s)."""

    name: str
    aliases: tuple[str, ...]
    bf16_flops: float
    fp8_flops: float | None
    hbm_bytes_per_s: float
    memory_bytes: int
    link_bytes_per_s: float
    host_link_bytes_per_s: float
    gpus_per_node: int
    price_per_gpu_hour: float
    price_source: str
    source: str
    node_source: str
    #: streaming multiprocessors (AMD: compute units); None where the vendor publishes no count.
    #: Used by the calibration report's wave-quantisation ablation (chironsim/perf/calibrate.py).
    sm_count: int | None = None


@dataclass(frozen=True, slots=True)
class Model:
    """A decoder-only transformer's shapes, enough to count weights, FLOPs and KV bytes."""

    name: str
    aliases: tuple[str, ...]
    num_layers: int
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    published_params: float
    max_context: int
    source: str
    num_experts: int = 1
    experts_per_token: int = 1
    tied_embeddings: bool = False
    qkv_bias: bool = False

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 1

    @property
    def attention_params_per_layer(self) -> int:
        """Q, K, V and O projections; K and V are narrower under grouped-query attention."""
        q_dim = self.num_heads * self.head_dim
        kv_dim = self.num_kv_heads * self.head_dim
        bias = (q_dim + 2 * kv_dim) if self.qkv_bias else 0
        return self.hidden_size * (q_dim + 2 * kv_dim) + q_dim * self.hidden_size + bias

    @property
    def expert_params(self) -> int:
        """One gated MLP (gate, up and down matrices)."""
        return 3 * self.hidden_size * self.intermediate_size

    @property
    def router_params_per_layer(self) -> int:
        return self.hidden_size * self.num_experts if self.is_moe else 0

    def _count(self, experts: int) -> int:
        per_layer = (
            self.attention_params_per_layer
            + experts * self.expert_params
            + self.router_params_per_layer
            + 2 * self.hidden_size  # the two RMSNorm weight vectors
        )
        embeddings = self.vocab_size * self.hidden_size
        lm_head = 0 if self.tied_embeddings else embeddings
        return self.num_layers * per_layer + embeddings + lm_head + self.hidden_size

    @property
    def param_count(self) -> int:
        """Parameters computed from the shapes (every expert counted)."""
        return self._count(self.num_experts)

    @property
    def active_param_count(self) -> int:
        """Parameters one token touches: only `experts_per_token` experts of an MoE layer."""
        return self._count(self.experts_per_token)

    def weight_bytes(self, dtype_bytes: int = 2) -> int:
        return self.param_count * dtype_bytes

    def kv_bytes_per_token(self, dtype_bytes: int = 2) -> int:
        """K and V for one token across all layers: 2 x layers x kv_heads x head_dim x bytes."""
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * dtype_bytes

    def tp_degrees(self, most: int) -> list[int]:
        """Tensor-parallel degrees up to ``most`` that vLLM can shard this model over: ``tp``
        must divide the attention heads, and the KV heads must split evenly (kv_heads % tp ==
        0) or be replicated evenly (tp % kv_heads == 0)."""
        return [tp for tp in range(1, most + 1)
                if self.num_heads % tp == 0
                and (self.num_kv_heads % tp == 0 or tp % self.num_kv_heads == 0)]

    def kv_heads_per_gpu(self, tp: int) -> int:
        """KV heads each of `tp` GPUs holds; heads are replicated when tp exceeds their number."""
        return math.ceil(self.num_kv_heads / tp)
