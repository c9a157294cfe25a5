"""Tile and wave quantisation of the GEMM grid (issue 11 item 3): the SM counts in the catalog
and the calibration report's ablation variants that use them (docs/latency-model.md, section 3)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from chironsim.catalog import get_gpu, list_gpus
from chironsim.perf.calibrate import (
    MECHANISM_VARIANTS, _ablation, _ablation_tables, _fit_gemm, _gemm_shapes, _predict_gemm, gemm_grid,
    wave_quantised_flops,
)

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
    mechanisms = with_sms[with_sms["variant"].str.endswith("(108 SMs)")]
    assert len(mechanisms) == len(MECHANISM_VARIANTS) == 5
    # the extra parameters are reported where the variant has them
    assert mechanisms["p"].notna().sum() == 3 and mechanisms["f"].notna().sum() == 3
    assert with_sms.iloc[-1]["variant"].endswith("(chosen)") and with_sms.iloc[-1]["worst_group_pct"] < 0.5
    without = _ablation(gemms, dataclasses.replace(A100, sm_count=None), chosen)
    assert not without["variant"].str.startswith("waves").any() and len(without) == 4


def test_grid_is_the_tile_count_of_the_tile_the_wave_model_picks():
    assert gemm_grid(300, 1000, 108, ((128, 128),)) == 3 * 8
    # 8 tokens x 1024 columns: 64 x 64 tiles (16, one wave) pad less than 128 x 128 (8, one wave)
    tiles = ((64, 64), (128, 128))
    assert gemm_grid(8, 1024, 108, tiles) == 16
    tokens = np.arange(1, 3000, 41, dtype=float)
    grid = gemm_grid(tokens, 4096, 132)
    assert grid.shape == tokens.shape and np.all(grid >= 1)


def test_mechanisms_reduce_to_the_chosen_form():
    gemms = _gemm_frame()
    params = np.array([0.75, 0.8, 0.5, 5.0])
    plain = _predict_gemm(params, gemms, A100)
    # per-wave overlap with exponent 0 is the chosen form; with p > 0 it only hides more
    same = _predict_gemm(np.append(params, 0.0), gemms, A100, mechanism="per-wave overlap")
    assert np.array_equal(same, plain)
    hidden = _predict_gemm(np.append(params, 1.0), gemms, A100, mechanism="per-wave overlap", grid="128x128")
    assert np.all(hidden <= plain) and np.any(hidden < plain)
    # occupancy: a grid of at least f x SMs tiles runs at the full rates; smaller ones slower
    occupied = _predict_gemm(np.append(params, 1.0), gemms, A100, mechanism="occupancy", grid="128x128")
    full = gemm_grid(gemms["tokens"], gemms["outputs"], 108, ((128, 128),)) >= 108
    assert np.allclose(occupied[full], plain[full], rtol=1e-12) and np.all(occupied[~full] > plain[~full])
    both = _predict_gemm(np.append(params, [0.0, 1.0]), gemms, A100, mechanism="per-wave overlap + occupancy",
                         grid="128x128")
    assert np.array_equal(both, occupied)


def test_ablation_groups_table_has_every_variant_and_group():
    gemms = _gemm_frame()
    table, groups = _ablation_tables(gemms, A100, _fit_gemm(gemms, A100))
    assert len(groups) == 4 * len(table) and set(groups["group"]) == {"QKV", "O", "MLP up", "MLP down"}
    assert list(dict.fromkeys(groups["variant"])) == list(table["variant"])
    assert groups[groups["variant"] == table.iloc[-1]["variant"]]["all_pct"].max() < 0.5
