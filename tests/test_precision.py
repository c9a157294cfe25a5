"""Precision knobs (issue 11 item 4): FP8 weights and an FP8 KV cache per pool.

What must hold: the defaults change nothing; an FP8 cache doubles the KV capacity in the same
memory; FP8 weights never make an iteration slower and make a memory-bound decode faster; a
bigger model fits with FP8 where BF16 does not; a GPU without FP8 rejects FP8 weights (exit 2,
file:line and key path) but accepts an FP8 KV cache, as vLLM does.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import yaml

from chironsim.catalog import get_gpu, get_model, list_gpus
from chironsim.errors import ChironError, ConfigError
from chironsim.experiments.config import parse_config
from chironsim.perf import (
    BF16,
    IterationTimeModel,
    Precision,
    kv_block_bytes,
    kv_capacity_blocks,
    model_weight_bytes,
)
from chironsim.perf.drop import fused_kv_capacity_blocks, layer_weight_bytes
from chironsim.perf.exchange import kv_bytes_per_token_per_gpu
from chironsim.sim.cluster import PoolSpec
from chironsim.sim.config import ClusterConfig, PoolConfig

FP8_GPUS = [g.name for g in list_gpus() if g.fp8_flops is not None]
NO_FP8_GPUS = [g.name for g in list_gpus() if g.fp8_flops is None]
MODELS = [("Llama-3-8B", 1), ("Llama-3-70B", 4), ("Mixtral-8x7B", 2), ("Qwen2.5-7B", 1)]
W8 = Precision("fp8", "auto")
KV8 = Precision("bf16", "fp8")
BOTH = Precision("fp8", "fp8")

# a grid of iterations: pure decode (small and large batches, short and long contexts),
# pure prefill, and mixed
PT = np.array([0, 0, 0, 0, 512, 8192, 256, 2048], dtype=float)
PAW = PT * PT / 2
DS = np.array([1, 8, 64, 256, 0, 0, 32, 128], dtype=float)
DC = DS * np.array([100, 1000, 2000, 4000, 0, 0, 1500, 3000], dtype=float)


def test_the_default_precision_is_bf16_and_changes_nothing():
    gpu = get_gpu("H100-SXM")
    for name, tp in MODELS:
        model = get_model(name)
        plain = IterationTimeModel(model, gpu, tp)
        explicit = IterationTimeModel(model, gpu, tp, precision=Precision("bf16", "auto"))
        assert np.array_equal(plain.iteration_time(PT, PAW, DS, DC), explicit.iteration_time(PT, PAW, DS, DC))
        assert model_weight_bytes(model, BF16) == model.weight_bytes()
        assert kv_block_bytes(model, 16, tp, BF16) == kv_block_bytes(model, 16, tp)
        assert kv_capacity_blocks(model, gpu, tp, precision=BF16) == kv_capacity_blocks(model, gpu, tp)


def test_unknown_dtypes_are_rejected():
    with pytest.raises(ConfigError, match="dtype must be one of bf16, fp8"):
        Precision("int4")
    with pytest.raises(ConfigError, match="kv_cache_dtype must be one of auto, fp8"):
        Precision("bf16", "bf16")


@pytest.mark.parametrize(("name", "tp"), MODELS)
@pytest.mark.parametrize("gpu_name", ["H100-SXM", "A100-80GB", "L40S"])
def test_an_fp8_kv_cache_doubles_the_kv_capacity_in_the_same_memory(gpu_name, name, tp):
    gpu, model = get_gpu(gpu_name), get_model(name)
    try:
        bf16 = kv_capacity_blocks(model, gpu, tp)
    except ChironError:
        pytest.skip(f"{name} does not fit {tp} x {gpu_name}")
    fp8 = kv_capacity_blocks(model, gpu, tp, precision=KV8)
    assert 2 * kv_block_bytes(model, 16, tp, KV8) == kv_block_bytes(model, 16, tp)
    # floor(2x) is 2 floor(x) or one more
    assert 2 * bf16 <= fp8 <= 2 * bf16 + 1
    assert 2 * kv_bytes_per_token_per_gpu(model, tp, KV8) == kv_bytes_per_token_per_gpu(model, tp)


@pytest.mark.parametrize("gpu_name", FP8_GPUS)
@pytest.mark.parametrize(("name", "tp"), MODELS)
def test_fp8_is_never_slower_than_bf16(gpu_name, name, tp):
    gpu, model = get_gpu(gpu_name), get_model(name)
    base = IterationTimeModel(model, gpu, tp).iteration_time(PT, PAW, DS, DC)
    for precision in (W8, KV8, BOTH):
        faster = IterationTimeModel(model, gpu, tp, precision=precision).iteration_time(PT, PAW, DS, DC)
        assert np.all(faster <= base), (precision, faster / base)
    both = IterationTimeModel(model, gpu, tp, precision=BOTH).iteration_time(PT, PAW, DS, DC)
    w8 = IterationTimeModel(model, gpu, tp, precision=W8).iteration_time(PT, PAW, DS, DC)
    assert np.all(both <= w8)


@pytest.mark.parametrize("gpu_name", FP8_GPUS)
def test_a_memory_bound_decode_iteration_gets_faster_with_fp8_weights(gpu_name):
    gpu, model = get_gpu(gpu_name), get_model("Llama-3-8B")
    bf16 = IterationTimeModel(model, gpu).iteration_time(0, 0, 8, 8 * 1000)
    fp8 = IterationTimeModel(model, gpu, precision=W8).iteration_time(0, 0, 8, 8 * 1000)
    # streaming the linear layers' weights dominates: they halve, the LM head, attention,
    # element-wise kernels and the fixed overhead do not
    assert 0.5 * bf16 < fp8 < 0.85 * bf16


def test_fp8_weights_price_compute_bound_gemms_at_the_fp8_peak():
    gpu, model = get_gpu("H100-SXM"), get_model("Llama-3-8B")
    bf16 = IterationTimeModel(model, gpu).token_layer_time([16384])[0]
    fp8 = IterationTimeModel(model, gpu, precision=W8).token_layer_time([16384])[0]
    # a long prefill's layer is mostly GEMM compute, which runs at twice the peak
    assert fp8 < 0.7 * bf16


def test_an_fp8_kv_cache_halves_the_decode_attention_reads():
    gpu, model = get_gpu("A100-80GB"), get_model("Llama-3-8B")  # FP8 KV on a GPU without FP8
    bf16 = IterationTimeModel(model, gpu)
    fp8 = IterationTimeModel(model, gpu, precision=KV8)
    assert fp8._attn_per_context * 2 == bf16._attn_per_context
    long = (0, 0, 64, 64 * 8000)
    assert fp8.iteration_time(*long) < bf16.iteration_time(*long)


def test_fp8_weights_halve_the_linear_layers_only():
    model = get_model("Llama-3-8B")
    full, fp8 = model_weight_bytes(model), model_weight_bytes(model, W8)
    embeddings = 2 * model.vocab_size * model.hidden_size * 2  # embeddings and LM head stay BF16
    assert fp8 > full / 2
    assert full - fp8 == (full - embeddings) // 2 - model.num_layers * 2 * model.hidden_size - model.hidden_size
    assert layer_weight_bytes(model, W8) < layer_weight_bytes(model)


def test_a_bigger_model_fits_with_fp8_weights_where_bf16_does_not():
    gpu, model = get_gpu("H200"), get_model("Llama-3-70B")
    with pytest.raises(ChironError, match="does not fit"):
        kv_capacity_blocks(model, gpu, 1)
    assert kv_capacity_blocks(model, gpu, 1, precision=W8) > 0
    assert kv_capacity_blocks(model, gpu, 1, precision=BOTH) > kv_capacity_blocks(model, gpu, 1, precision=W8)


def test_fused_groups_gain_more_kv_with_fp8():
    gpu, model = get_gpu("H100-SXM"), get_model("Llama-3-8B")
    bf16 = fused_kv_capacity_blocks(model, gpu, 1, 2)
    assert fused_kv_capacity_blocks(model, gpu, 1, 2, precision=KV8) >= 2 * bf16


@pytest.mark.parametrize("gpu_name", NO_FP8_GPUS)
def test_a_gpu_without_fp8_rejects_fp8_weights_but_not_an_fp8_kv_cache(gpu_name):
    gpu = get_gpu(gpu_name)
    assert W8.problem(gpu) is not None and KV8.problem(gpu) is None
    with pytest.raises(ConfigError, match=f"dtype fp8 needs FP8 tensor cores, which {gpu.name} does not have"):
        IterationTimeModel(get_model("Llama-3-8B"), gpu, precision=W8)
    IterationTimeModel(get_model("Llama-3-8B"), gpu, precision=KV8)


def test_no_fp8_gpus_are_the_ampere_ones():
    assert set(NO_FP8_GPUS) == {"A100-40GB", "A100-80GB", "A10G", "A10"}


def _scenario(**cluster) -> dict:
    return {
        "name": "precision", "seed": 1, "duration_s": 20,
        "classes": {"interactive": {"slo": {"ttft": 2.0}}},
        "workload": {"streams": [{
            "kind": "synthetic", "request_class": "interactive",
            "arrival": {"kind": "poisson", "rate": 2.0},
            "prompt_tokens": {"kind": "fixed", "value": 100},
            "output_tokens": {"kind": "fixed", "value": 20}, "duration_s": 20}]},
        "cluster": {"model": "llama-3-8b", "gpu": "h100-sxm", **cluster},
        "output": {"plots": False},
    }


def test_a_pool_inherits_the_cluster_precision_and_may_override_it():
    cluster = ClusterConfig.model_validate({"dtype": "fp8", "pools": {
        "a": {}, "b": {"dtype": "bf16", "kv_cache_dtype": "fp8"}}})
    assert cluster.precision_of("a") == ("fp8", "auto")
    assert cluster.precision_of("b") == ("bf16", "fp8")
    a = PoolSpec.resolve("a", cluster.pools["a"], cluster)
    b = PoolSpec.resolve("b", cluster.pools["b"], cluster)
    plain = PoolSpec.resolve("c", PoolConfig(), ClusterConfig())
    assert a.weight_bytes < plain.weight_bytes == b.weight_bytes  # cold starts load less
    assert b.swap_seconds_per_block * 2 == pytest.approx(plain.swap_seconds_per_block)
    assert b.migration_copy.seconds(3) * 2 == pytest.approx(plain.migration_copy.seconds(3))
    assert b.kv_capacity_blocks >= 2 * plain.kv_capacity_blocks


def test_fp8_weights_on_a100_are_a_config_error_at_the_key():
    err = pytest.raises(ConfigError, parse_config, _scenario(gpu="a100", dtype="fp8"), "s.yaml").value
    assert "cluster.dtype: dtype fp8 needs FP8 tensor cores, which A100-80GB does not have" in str(err)
    assert "H100-SXM" in str(err) and "kv_cache_dtype: fp8 alone is fine" in str(err)
    parse_config(_scenario(gpu="a100", kv_cache_dtype="fp8"), "s.yaml")  # FP8 KV: fine


def test_precision_is_part_of_the_pinned_fingerprint(tmp_path):
    from chironsim.experiments.fingerprint import scenario_fingerprint

    plain = parse_config(_scenario(), "s.yaml")
    fp8 = parse_config(_scenario(kv_cache_dtype="fp8"), "s.yaml")
    explicit = parse_config(_scenario(dtype="bf16"), "s.yaml")
    prints = [scenario_fingerprint(c, tmp_path, exclude_defaults=True) for c in (plain, fp8, explicit)]
    assert prints[0] != prints[1] and prints[0] == prints[2]


def test_cli_rejects_fp8_weights_on_a_gpu_without_fp8_with_exit_2(tmp_path):
    data = _scenario(gpu="a10g", model="qwen2.5-7b")
    data["cluster"]["pools"] = {"default": {"instances": 1, "dtype": "fp8"}}
    path = tmp_path / "scenario.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    line = next(i for i, text in enumerate(path.read_text().splitlines(), 1) if "dtype: fp8" in text)
    out = subprocess.run([sys.executable, "-m", "chironsim.cli", "run", str(path), "--quiet", "--out",
                          str(tmp_path / "out")], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert f"scenario.yaml:{line}: cluster.pools.default.dtype: dtype fp8 needs FP8 tensor cores" in out.stderr
    assert not (tmp_path / "out").exists()


def test_an_fp8_run_records_its_precision_in_the_manifest(tmp_path):
    from chironsim.experiments.runner import run

    result = run(parse_config(_scenario(dtype="fp8", kv_cache_dtype="fp8"), "s.yaml"), base_dir=tmp_path)
    assert result.manifest["precision"] == {"default": {"dtype": "fp8", "kv_cache_dtype": "fp8"}}
    assert result.manifest["config"]["cluster"]["dtype"] == "fp8"
    assert (result.requests["status"] == "finished").all()
