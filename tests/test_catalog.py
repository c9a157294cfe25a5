"""Catalog data: computed shapes agree with published figures, lookups are forgiving but strict."""

from __future__ import annotations

import dataclasses

import pytest

from chironsim.catalog import GPU, Model, get_gpu, get_model, list_gpus, list_models
from chironsim.errors import ChironError, UnknownNameError

EXPECTED_GPUS = {
    "A100-40GB", "A100-80GB", "H100-SXM", "H100-PCIe", "H200", "L40S", "A10", "A10G", "MI300X", "B200",
}
EXPECTED_MODELS = {
    "LLaMA-7B", "LLaMA-30B", "Llama-2-7B", "Llama-2-13B", "Llama-2-70B", "Llama-3-8B", "Llama-3-70B",
    "Llama-3.1-8B", "Llama-3.1-70B", "Llama-3.1-405B", "Mistral-7B", "Mixtral-8x7B", "Qwen2.5-7B",
    "Qwen2.5-72B",
}


def test_catalog_lists_every_required_entry():
    assert {g.name for g in list_gpus()} == EXPECTED_GPUS
    assert {m.name for m in list_models()} == EXPECTED_MODELS


@pytest.mark.parametrize("model", list_models(), ids=lambda m: m.name)
def test_computed_parameter_count_matches_published_within_two_percent(model: Model):
    assert model.param_count == pytest.approx(model.published_params, rel=0.02)


def test_exact_parameter_counts_from_shapes():
    # Hugging Face safetensors totals, which the shape formula must reproduce exactly
    assert get_model("Llama-2-7B").param_count == 6_738_415_616
    assert get_model("Mistral-7B").param_count == 7_241_732_096
    assert get_model("Mixtral-8x7B").param_count == 46_702_792_704
    assert get_model("Llama-3.1-405B").param_count == 405_853_388_800


def test_moe_active_parameters_are_two_experts_worth():
    mixtral = get_model("Mixtral-8x7B")
    assert mixtral.active_param_count == pytest.approx(12.9e9, rel=0.02)  # Mistral's stated 12.9B active
    dense = get_model("Llama-3-8B")
    assert dense.active_param_count == dense.param_count


@pytest.mark.parametrize(
    ("name", "expected"),
    [("Llama-3-8B", 131072), ("Llama-2-7B", 512 * 1024), ("Llama-3-70B", 320 * 1024)],
)
def test_kv_bytes_per_token_fp16(name: str, expected: int):
    assert get_model(name).kv_bytes_per_token(2) == expected


def test_weight_bytes_scale_with_dtype():
    model = get_model("Llama-2-13B")
    assert model.weight_bytes() == 2 * model.param_count
    assert model.weight_bytes(1) == model.param_count


def test_every_entry_names_its_source():
    for gpu in list_gpus():
        assert len(gpu.source) > 20, gpu.name
        assert gpu.price_source and gpu.price_per_gpu_hour > 0, gpu.name
    for model in list_models():
        assert "huggingface.co" in model.source, model.name
    datasheets = [g.name for g in list_gpus() if "datasheet" in g.source.lower()]
    assert len(datasheets) >= 9  # only the AWS-only A10G lacks a vendor datasheet


def test_gpu_numbers_are_dense_and_consistent():
    for gpu in list_gpus():
        assert gpu.hbm_bytes_per_s > gpu.link_bytes_per_s >= gpu.host_link_bytes_per_s * 0.5, gpu.name
        if gpu.fp8_flops is not None:  # dense FP8 is twice dense BF16 on every listed part
            assert gpu.fp8_flops == pytest.approx(2 * gpu.bf16_flops, rel=0.02), gpu.name
    assert get_gpu("A100-80GB").fp8_flops is None and get_gpu("A10G").fp8_flops is None
    assert get_gpu("H100-SXM").bf16_flops == pytest.approx(989.4e12)  # not the 1,979 sparsity figure
    assert get_gpu("A100-80GB").memory_bytes == 80 * 2**30


def test_lookup_is_case_insensitive_and_accepts_aliases():
    assert get_gpu("h100").name == "H100-SXM"
    assert get_gpu("A100").name == "A100-80GB"
    assert get_gpu("a100-40gb").name == "A100-40GB"
    assert get_model("META-LLAMA/Llama-2-7b-hf").name == "Llama-2-7B"
    assert get_model("meta-llama-3-8b").name == "Llama-3-8B"
    assert get_model("mixtral").name == "Mixtral-8x7B"


def test_unknown_names_raise_with_close_matches():
    with pytest.raises(UnknownNameError) as info:
        get_gpu("H100-SMX")
    assert info.value.kind == "GPU" and "did you mean h100-sxm" in str(info.value)
    with pytest.raises(UnknownNameError) as info:
        get_model("llama-3-7b")
    assert info.value.kind == "model" and "llama-3-8b" in str(info.value)
    assert isinstance(info.value, ChironError)


def test_entries_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        get_gpu("h100").bf16_flops = 1.0  # type: ignore[misc]
    assert isinstance(get_gpu("h100"), GPU)
