"""Tile and wave quantisation of the GEMM grid (issue 11 item 3): the SM counts in the catalog
and the calibration report's ablation variants that use them (docs/latency-model.md, section 3)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from chironsim.catalog import get_gpu, list_gpus
from chironsim.perf.calibrate import _ablation, _fit_gemm, _gemm_shapes, _predict_gemm, wave_quantised_flops

A100 = get_gpu("a100")


def test_catalog_sm_counts():
    assert get_gpu("a100").sm_count == 108 and get_gpu("h100").sm_count == 132
    assert get_gpu("h100-pcie").sm_count == 114
    for gpu in list_gpus():
        assert gpu.sm_count is None or (isinstance(gpu.sm_count, int) and gpu.sm_count > 0), gpu.name
    assert get_gpu("b200").sm_count is None  # no vendor figure: the ablation skips the variant


def test_one_full_wave_costs_the_plain_flops_and_one_more_tile_a_wave():
    # 128 x 128 tiles only: 4 x 27 = 108 tiles fill the A100's 108 SMs exactly
    tile = ((128, 128),)
    exact = wave_quantised_flops(512, 27 * 128, 1000, 108, tile)
    assert exact == pytest.approx(2 * 512 * 27 * 128 * 1000)
    # one more row of tiles: 135 tiles, two waves, each as long as a full one
    more = wave_quantised_flops(513, 27 * 128, 1000, 108, tile)
    assert more == pytest.approx(2 * exact)


def test_best_tile_and_split_k():
    tiles = ((64, 64), (128, 128))
    # 8 tokens: the 64-row tile pads less than the 128-row one
    assert wave_quantised_flops(8, 1024, 512, 108, tiles) == pytest.approx(1 * 108 * 2 * 64 * 64 * 512)
    # an underfilled grid with split-K pays only the row padding to the tile
    split = wave_quantised_flops(8, 1024, 512, 108, tiles, split_k=True)
    assert split == pytest.approx(64 * 2 * 1024 * 512)
    # never below the unpadded FLOPs, vectorised over token counts
    tokens = np.arange(1, 5000, 37, dtype=float)
    for split_k in (False, True):
        flops = wave_quantised_flops(tokens, 4096, 4096, 132, split_k=split_k)
        assert flops.shape == tokens.shape and np.all(flops >= 2 * tokens * 4096 * 4096 * (1 - 1e-12))


def _gemm_frame() -> pd.DataFrame:
    rows = []
    for tokens in (1, 8, 64, 256, 1024, 4096):
        for op in ("attn_pre_proj", "attn_post_proj", "mlp_up_proj", "mlp_down_proj"):
            rows.append({"model": "m", "tp": 1, "op": op, "tokens": tokens, "n_embd": 4096, "n_head": 32,
                         "n_kv_head": 32, "n_expanded_embd": 11008, "gated": True})
    gemms = _gemm_shapes(pd.DataFrame(rows))
    params = np.array([0.75, 0.8, 0.5, 5.0])
    return gemms.assign(seconds=_predict_gemm(params, gemms, A100))


def test_ablation_adds_wave_variants_only_for_gpus_with_an_sm_count():
    gemms = _gemm_frame()
    chosen = _fit_gemm(gemms, A100)
    with_sms = _ablation(gemms, A100, chosen)
    assert list(with_sms["variant"].str.startswith("waves on 108 SMs")).count(True) == 2
    assert with_sms.iloc[-1]["variant"].endswith("(chosen)") and with_sms.iloc[-1]["worst_group_pct"] < 0.5
    without = _ablation(gemms, dataclasses.replace(A100, sm_count=None), chosen)
    assert not without["variant"].str.startswith("waves").any() and len(without) == 4
