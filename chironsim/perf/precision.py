"""Numeric precision of a replica: the element sizes of its weights and KV cache, and the
tensor-core peak its GEMMs run at (issue 11 item 4; docs/latency-model.md, "Precision").

Two knobs per pool, named as vLLM names them:

- ``dtype`` (``bf16`` | ``fp8``): the linear layers' weights. FP8 is W8A8 as vLLM runs it on
  GPUs with FP8 tensor cores: the QKV, O and MLP (every expert's) weights are stored in one
  byte and their GEMMs run at the GPU's FP8 peak. What FP8 checkpoints leave in BF16 stays
  BF16: the token embeddings, the LM head, the norms and the biases (llm-compressor's FP8
  recipes quantise the ``Linear`` layers and ignore ``lm_head``); the MoE router gate is kept
  in BF16 too (an assumption; it is small either way). Activations stay
  BF16, so do the all-reduce messages and the pipeline hops. A GPU whose catalog
  ``fp8_tflops`` is null has no FP8 tensor cores and is a config error (vLLM would fall back
  to weight-only W8A16 Marlin kernels there, a path chironsim does not model).
- ``kv_cache_dtype`` (``auto`` | ``fp8``): ``auto`` stores K and V in the activation dtype
  (BF16, two bytes), ``fp8`` in one byte. vLLM supports an FP8 KV cache on GPUs without FP8
  tensor cores too (a storage format, converted in the attention kernel; vLLM PR #2279 tested
  it on A100), so it is accepted on every GPU; attention FLOPs stay at the BF16 peak.

The defaults (``bf16``, ``auto``) give exactly the numbers of the BF16-only model.
"""

from __future__ import annotations

from dataclasses import dataclass

from chironsim.catalog.specs import GPU, Model
from chironsim.errors import ConfigError

#: bytes per element of each storage dtype
ELEMENT_BYTES = {"bf16": 2, "fp8": 1}
ACTIVATION_BYTES = 2  # BF16 activations, whatever the weights and the KV cache are
WEIGHT_DTYPES = ("bf16", "fp8")
KV_CACHE_DTYPES = ("auto", "fp8")


@dataclass(frozen=True, slots=True)
class Precision:
    """A replica's weight dtype and KV-cache dtype."""

    weights: str = "bf16"
    kv_cache: str = "auto"

    def __post_init__(self) -> None:
        if self.weights not in WEIGHT_DTYPES:
            raise ConfigError(f"dtype must be one of {', '.join(WEIGHT_DTYPES)}, got {self.weights!r}")
        if self.kv_cache not in KV_CACHE_DTYPES:
            raise ConfigError(f"kv_cache_dtype must be one of {', '.join(KV_CACHE_DTYPES)}, got {self.kv_cache!r}")

    @property
    def weight_bytes(self) -> int:
        """Bytes per element of the quantised (linear-layer) weights."""
        return ELEMENT_BYTES[self.weights]

    @property
    def kv_bytes(self) -> int:
        """Bytes per element of the KV cache (``auto``: the activation dtype, BF16)."""
        return ACTIVATION_BYTES if self.kv_cache == "auto" else ELEMENT_BYTES[self.kv_cache]

    def problem(self, gpu: GPU) -> str | None:
        """Why this precision cannot run on `gpu`, or None."""
        if self.weights == "fp8" and gpu.fp8_flops is None:
            from chironsim.catalog import list_gpus

            with_fp8 = ", ".join(g.name for g in list_gpus() if g.fp8_flops is not None)
            return (f"dtype fp8 needs FP8 tensor cores, which {gpu.name} does not have (its catalog "
                    f"fp8_tflops is null); use dtype: bf16, or a GPU with FP8 ({with_fp8}). "
                    "kv_cache_dtype: fp8 alone is fine on any GPU (vLLM's weight-only FP8 path "
                    "on GPUs without FP8, W8A16 Marlin, is not modelled)")
        return None

    def gemm_flops(self, gpu: GPU) -> float:
        """Peak FLOP/s of the quantised GEMMs on `gpu`."""
        why = self.problem(gpu)
        if why is not None:
            raise ConfigError(why)
        return gpu.fp8_flops if self.weights == "fp8" else gpu.bf16_flops

    def label(self) -> str:
        return f"dtype {self.weights}, kv_cache_dtype {self.kv_cache}"


BF16 = Precision()


def quantized_params_per_layer(model: Model) -> int:
    """Weights of one layer's linear layers that an FP8 checkpoint stores in FP8: QKV and O
    (no biases) and every expert's gate, up and down matrices (not the router, not the norms)."""
    q_dim = model.num_heads * model.head_dim
    kv_dim = model.num_kv_heads * model.head_dim
    return model.hidden_size * (q_dim + 2 * kv_dim) + q_dim * model.hidden_size + model.num_experts * model.expert_params


def model_weight_bytes(model: Model, precision: Precision = BF16) -> int:
    """Bytes of all of the model's weights: the linear layers at the weight dtype, the rest
    (embeddings, LM head, norms, router, biases) in BF16. BF16: ``model.weight_bytes(2)``."""
    saved = model.num_layers * quantized_params_per_layer(model) * (ACTIVATION_BYTES - precision.weight_bytes)
    return model.weight_bytes(ACTIVATION_BYTES) - saved


def layer_weight_bytes(model: Model, precision: Precision = BF16) -> int:
    """Bytes of one decoder layer's weights over a whole replica (every expert counted)."""
    params = (model.attention_params_per_layer + model.num_experts * model.expert_params
              + model.router_params_per_layer + 2 * model.hidden_size)
    return params * ACTIVATION_BYTES - quantized_params_per_layer(model) * (ACTIVATION_BYTES - precision.weight_bytes)
