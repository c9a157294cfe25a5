"""Calibration: recovers known factors and communication curves from synthetic profiles,
rejects bad files, and the shipped per-GPU factors and curves are reproducible from the public
Vidur profiles and meet the error targets they are shipped with."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from chironsim.catalog import get_gpu
from chironsim.errors import TraceFormatError
from chironsim.perf import Efficiency
from chironsim.perf.calibrate import calibrate, calibrate_command, format_report
from chironsim.perf.efficiency import shipped_calibration

TRACES = Path(__file__).resolve().parents[1].parent / "shared" / "traces"
VIDUR = TRACES / "vidur_profiling"
A100 = get_gpu("A100-80GB")
TRUE = {"gemm_compute": 0.65, "gemm_memory": 0.7, "overlap": 0.4, "kernel_floor_s": 4e-6,
        "norm_memory": 0.4, "norm_floor_s": 2e-6, "norm_rows": 120.0, "rope_memory": 0.5, "rope_floor_s": 3e-6,
        "rope_rows": 80.0, "act_memory": 0.55, "act_floor_s": 1e-6, "act_rows": 100.0,
        "add_memory": 0.9, "add_floor_s": 1.5e-6, "add_rows": 20.0}
KIND = {"input_layernorm": "norm", "post_attention_layernorm": "norm", "attn_rope": "rope", "mlp_act": "act",
        "add": "add"}
#: the synthetic all-reduce: latency 20 us, then 60 % of the link rate (one alpha-beta line)
ALPHA, LINK_SHARE = 20e-6, 0.6
TOKENS = sorted({2**i for i in range(13)} | set(range(64, 4097, 192)))


def _synthetic_mlp(path: Path, h: int, heads: int, kv_heads: int, inter: int) -> Path:
    """A Vidur-format mlp.csv whose times follow the model with the TRUE factors (written out
    independently of chironsim's code so that a units or sharding slip shows up)."""
    rows = []
    flops, hbm, b = A100.bf16_flops, A100.hbm_bytes_per_s, 2
    for tp in (1, 2, 4):
        hd = h // heads
        q, kv, i_tp = heads * hd // tp, math.ceil(kv_heads / tp) * hd, inter // tp
        shapes = {"attn_pre_proj": (h, q + 2 * kv), "attn_post_proj": (q, h),
                  "mlp_up_proj": (h, 2 * i_tp), "mlp_down_proj": (i_tp, h)}
        widths = {"input_layernorm": 2 * h, "attn_rope": 2 * (q + kv), "post_attention_layernorm": 2 * h,
                  "mlp_act": 3 * i_tp, "add": 3 * h}
        for t in TOKENS:
            row = {"n_head": heads, "n_kv_head": kv_heads, "n_embd": h, "n_expanded_embd": inter,
                   "vocab_size": 32000, "use_gated_mlp": True, "num_tokens": t, "num_tensor_parallel_workers": tp}
            for op, (fan_in, fan_out) in shapes.items():
                tc = 2 * t * fan_in * fan_out / (flops * TRUE["gemm_compute"])
                tm = (fan_in * fan_out + t * (fan_in + fan_out)) * b / (hbm * TRUE["gemm_memory"])
                seconds = max(tc, tm) + TRUE["overlap"] * min(tc, tm) + TRUE["kernel_floor_s"]
                row[f"time_stats.{op}.median"] = seconds * 1e3
            for op, width in widths.items():
                kind = KIND[op]
                rows_priced = max(t, TRUE[f"{kind}_rows"])
                seconds = TRUE[f"{kind}_floor_s"] + rows_priced * width * b / (hbm * TRUE[f"{kind}_memory"])
                row[f"time_stats.{op}.median"] = seconds * 1e3
            rows.append(row)
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def _synthetic_all_reduce(path: Path) -> Path:
    rows = []
    for n in (2, 4, 8):
        for size in [2**k for k in range(11, 27)] + list(range(2**20, 2**26, 2**22)):
            seconds = ALPHA + 2 * (n - 1) / n * size / (A100.link_bytes_per_s * LINK_SHARE)
            rows.append({"time_stats.all_reduce.median": seconds * 1e3, "rank": 0, "num_workers": n,
                         "size": size, "collective": "all_reduce", "devices_per_node": n, "max_devices_per_node": 8})
    pd.DataFrame(rows).to_csv(path)
    return path


@pytest.fixture
def synthetic(tmp_path: Path) -> list[Path]:
    return [_synthetic_mlp(tmp_path / "a100_small_mlp.csv", 1024, 8, 2, 2816),
            _synthetic_mlp(tmp_path / "a100_large_mlp.csv", 4096, 32, 8, 14336),
            _synthetic_all_reduce(tmp_path / "a100_all_reduce.csv")]


def test_calibration_recovers_known_factors(synthetic):
    report = calibrate(synthetic, A100).only
    fitted = report.efficiency.to_mapping()
    for name, value in TRUE.items():
        assert fitted[name] == pytest.approx(value, rel=0.01), name
    assert report.gemm_errors["max_err_pct"].max() < 0.5
    assert set(report.gemm_errors["model"]) == {"small", "large"}
    assert len(report.reference_checks) == 6 and fitted["iteration_overhead_s"] >= 0
    # the piecewise curve reproduces a straight alpha-beta line within 2 % (its knots sit between
    # the sparse synthetic sizes, which the L1 fit does not pin exactly)
    for n in (2, 4, 8):
        for size in (2048.0, 1e5, 3e6, 5e7):
            expected = ALPHA + 2 * (n - 1) / n * size / (A100.link_bytes_per_s * LINK_SHARE)
            assert report.comm.all_reduce(size, n) == pytest.approx(expected, rel=0.02), (n, size)
    assert report.comm_errors["worst_decade_pct"].max() < 1.0


def test_command_writes_factors_that_load_back(synthetic, tmp_path: Path):
    target = tmp_path / "fitted.yaml"
    text = calibrate_command([str(p) for p in synthetic], "a100", str(target))
    assert "Per-layer linear time" in text and f"wrote {target}" in text
    document = yaml.safe_load(target.read_text())
    assert document["generated_by"].startswith("chironsim calibrate a100_small_mlp.csv")
    assert str(tmp_path) not in target.read_text()  # no machine paths in a file meant for the repo
    assert list(document["gpus"]) == ["A100-80GB"] and document["gpus"]["A100-80GB"]["comm"]["all_reduce"]
    loaded = Efficiency.from_yaml(target)
    assert loaded.gemm_compute == pytest.approx(TRUE["gemm_compute"], rel=0.01)


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_bad_files_name_file_line_and_column(synthetic, tmp_path: Path):
    good = pd.read_csv(synthetic[0])
    broken = good.astype({"num_tokens": object})
    broken.loc[2, "num_tokens"] = "many"
    bad_cell = tmp_path / "bad_cell.csv"
    broken.to_csv(bad_cell, index=False)
    column = list(good.columns).index("num_tokens") + 1
    with pytest.raises(TraceFormatError, match=rf"bad_cell\.csv:4: column 'num_tokens' \(column {column}\): 'many'"):
        calibrate([bad_cell], A100)

    missing = tmp_path / "missing.csv"
    good.drop(columns=["n_head"]).to_csv(missing, index=False)
    with pytest.raises(TraceFormatError, match=r"missing\.csv:1: .*missing columns: n_head"):
        calibrate([missing], A100)

    negative = good.copy()
    negative.loc[0, "time_stats.mlp_up_proj.median"] = -1.0
    negative.to_csv(tmp_path / "negative.csv", index=False)
    with pytest.raises(TraceFormatError, match=r"negative\.csv:2: .*mlp_up_proj"):
        calibrate([tmp_path / "negative.csv"], A100)

    with pytest.raises(TraceFormatError, match="empty"):
        calibrate([_write(tmp_path / "empty.csv", "")], A100)
    with pytest.raises(TraceFormatError, match="not found"):
        calibrate([tmp_path / "absent.csv"], A100)
    with pytest.raises(TraceFormatError, match=r"ragged\.csv:3"):
        calibrate([_write(tmp_path / "ragged.csv", "a,b\n1,2\n3,4,5,6\n")], A100)


def test_unreadable_and_out_of_range_profiles_are_user_errors(synthetic, tmp_path: Path):
    """Each of these used to escape as a traceback (EOFError, BadGzipFile, OverflowError,
    IntCastingNaNError) or named no file."""
    import gzip

    text = synthetic[0].read_bytes()
    assert calibrate([_gz(tmp_path / "ok_mlp.csv.gz", gzip.compress(text))], A100).only.gemm_errors is not None
    with pytest.raises(TraceFormatError, match=r"cut\.csv\.gz: the gzip data ends early"):
        calibrate([_gz(tmp_path / "cut.csv.gz", gzip.compress(text)[:2000])], A100)
    with pytest.raises(TraceFormatError, match=r"plain\.csv\.gz: not gzip-compressed"):
        calibrate([_gz(tmp_path / "plain.csv.gz", text)], A100)
    lines = text.split(b"\n")
    lines[4] = b"\xff" + lines[4]
    with pytest.raises(TraceFormatError, match=r"latin\.csv:5: not UTF-8 text: byte 0xff at column 1"):
        calibrate([_gz(tmp_path / "latin.csv", b"\n".join(lines))], A100)
    with pytest.raises(TraceFormatError, match=r"header\.csv: no data rows"):
        calibrate([_gz(tmp_path / "header.csv", lines[0] + b"\n")], A100)
    good = pd.read_csv(synthetic[0])
    column = list(good.columns).index("num_tokens") + 1
    for name, value, shown in (("huge", "9" * 400, "9999"), ("inf", "inf", "inf"), ("half", "1.5", "1.5")):
        broken = good.astype({"num_tokens": object})
        broken.loc[1, "num_tokens"] = value
        broken.to_csv(tmp_path / f"{name}.csv", index=False)
        with pytest.raises(TraceFormatError, match=rf"{name}\.csv:3: column 'num_tokens' \(column {column}\): "
                           rf"{shown}.* is not a positive whole number"):
            calibrate([tmp_path / f"{name}.csv"], A100)


def _gz(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _shared_files(prefix: str) -> list[Path]:
    files = sorted(VIDUR.glob(f"{prefix}_*_mlp.csv")) + [VIDUR / f"{prefix}_dgx_all_reduce.csv",
                                                          VIDUR / f"{prefix}_dgx_send_recv.csv"]
    if not VIDUR.is_dir() or not all(f.exists() for f in files) or len(files) < 4:
        pytest.skip("Vidur profiles not found at ../shared/traces/vidur_profiling (not shipped with the package)")
    return files


@pytest.fixture(scope="module")
def vidur_report():
    """The shipped calibration's own command: A100 and H100 profiles, each fitted on its own."""
    return calibrate(_shared_files("a100") + _shared_files("h100"))


def test_fit_to_vidur_profiles_is_accurate(vidur_report):
    a100 = vidur_report.gpus["A100-80GB"]
    errors = a100.gemm_errors
    assert len(errors) == 16  # 4 models x TP 1/2/4/8
    assert errors["mape_pct"].max() < 8.0 and errors["mape_pct"].mean() < 5.0
    assert errors["mape_small_pct"].max() < 10.0
    assert a100.heldout_errors["mape_pct"].max() < 8.0
    chosen = a100.ablation.iloc[-1]
    terms = a100.ablation[a100.ablation["variant"].str.startswith("max()")].iloc[:-1]
    assert len(terms) == 3 and all(chosen["mape_pct"] < row["mape_pct"] for _, row in terms.iterrows())
    # the wave-quantised variants are reported (the GPUs have SM counts) and none meets the
    # issue's per-group target where the chosen form misses it (docs/latency-model.md, section 3)
    for report in vidur_report.gpus.values():
        waves = report.ablation[report.ablation["variant"].str.startswith("waves on")]
        assert len(waves) == 2 and np.isfinite(waves["worst_group_pct"]).all()
        # so are the per-wave-overlap and occupancy mechanisms, each with its per-group errors
        mechanisms = report.ablation[report.ablation["variant"].str.contains("per-wave overlap|occupancy")]
        assert len(mechanisms) == 5 and np.isfinite(mechanisms["worst_group_pct"]).all()
        assert len(report.ablation_groups) == 4 * len(report.ablation)
    # none of them brings H100 MLP down to the target (docs/latency-model.md, section 3)
    h100 = vidur_report.gpus["H100-SXM"].ablation_groups
    down = h100[(h100["group"] == "MLP down") & h100["variant"].str.contains("per-wave overlap|occupancy")]
    assert len(down) == 5 and (down["all_pct"] > 8.0).all()
    assert a100.reference_checks["error_pct"].abs().max() < 15.0
    text = format_report(vidur_report)
    assert "| Llama-2-7b-hf | 1 |" in text and "## H100-SXM" in text and "Leave-one-GPU-out" in text


def _median(report, group: str, column: str = "all_pct") -> float:
    table = report.group_errors.set_index("group")
    return float(table.loc[group, column])


#: The issue's targets (issue 11 item 3): median absolute error <= 8 % for every operator group
#: on each GPU, and <= 12 % at <= 64 tokens.
TARGET_PCT, TARGET_SMALL_PCT = 8.0, 12.0
GROUPS = ("QKV", "O", "MLP up", "MLP down", "element-wise", "all-reduce")
#: Where the shipped model misses the target, with the median docs/latency-model.md publishes
#: for it: the test of the target is a strict xfail (it fails once the miss is fixed, so that
#: this entry is removed), and the published value is a bound against drift.
KNOWN_MISSES = {("H100-SXM", "MLP down"): 9.3}


def _target_cases():
    for gpu in ("A100-80GB", "H100-SXM"):
        for group in GROUPS:
            if (gpu, group) in KNOWN_MISSES:
                reason = f"{gpu} {group}: {KNOWN_MISSES[gpu, group]} % median, docs/latency-model.md section 3"
                yield pytest.param(gpu, group, marks=pytest.mark.xfail(strict=True, reason=reason))
            else:
                yield pytest.param(gpu, group)


@pytest.mark.parametrize(("gpu", "group"), list(_target_cases()))
def test_every_group_meets_the_issue_target(vidur_report, gpu, group):
    assert _median(vidur_report.gpus[gpu], group) <= TARGET_PCT


@pytest.mark.parametrize("gpu", ["A100-80GB", "H100-SXM"])
def test_per_group_errors_meet_what_is_claimed(vidur_report, gpu):
    """The known misses stay at what the docs publish (+0.2 points), and every group meets the
    issue's <= 12 % at <= 64 tokens."""
    report = vidur_report.gpus[gpu]
    for (where, group), published in KNOWN_MISSES.items():
        if where == gpu:
            assert _median(report, group) <= published + 0.2, group
    for group in ("QKV", "O", "MLP up", "MLP down", "element-wise"):
        assert _median(report, group, "<=64_pct") <= TARGET_SMALL_PCT, group


def test_communication_meets_ten_percent_in_every_decade_the_data_allows(vidur_report):
    """Median error <= 10 % in every size decade, except where no non-decreasing curve can
    keep it there while the others are held (comm_fit.decade_plan): every profile leaves
    exactly as many decades over 10 % as the data forces (``fewest_over_10pct``), and each such
    decade is the lone 2 KB first size of a sweep (A100 4 and 8 GPUs, H100 8 GPUs), measured
    1.6-3.8x slower than the next size. No curve beats the floor of the data; above 1 MB every
    configuration is within 4 %."""
    read = pd.read_csv
    over = {}
    for gpu, report in vidur_report.gpus.items():
        for row in report.comm_errors.to_dict(orient="records"):
            key = (gpu, row["collective"], row["workers"], row["devices_per_node"])
            assert row["worst_decade_pct"] >= row["floor_pct"] - 1e-6, key  # the floor is a true bound
            assert row["over_10pct"] == row["fewest_over_10pct"], key
            assert row["1e6_pct"] <= 4.0 and row["1e7_pct"] <= 4.0, key
            for decade in [c for c in row if c.startswith("1e") and row[c] > 10.0]:
                over[key] = decade
                assert row[decade] >= row["least_over_pct"] - 1e-6, key
    assert over == {("A100-80GB", "all_reduce", 4, 4): "1e3_pct", ("A100-80GB", "all_reduce", 8, 8): "1e3_pct",
                    ("H100-SXM", "all_reduce", 8, 8): "1e3_pct"}, over
    for gpu in ("a100", "h100"):  # the 1e3 decade of these profiles is one size, 2 KB
        sizes = read(VIDUR / f"{gpu}_dgx_all_reduce.csv")["size"]
        assert sorted(set(sizes[(sizes >= 1e3) & (sizes < 1e4)])) == [2048]


def test_shipped_calibration_is_reproducible(vidur_report):
    """Refit from the shared profiles; fails if a shipped factor or curve knot drifts > 1 %."""
    shipped = shipped_calibration()
    assert set(shipped.efficiency) == set(vidur_report.gpus) == {"A100-80GB", "H100-SXM"}
    for gpu, report in vidur_report.gpus.items():
        fitted = report.efficiency.to_mapping()
        for name, value in shipped.efficiency[gpu].to_mapping().items():
            assert fitted[name] == pytest.approx(value, rel=0.01), (gpu, name)
        assert np.isfinite(list(fitted.values())).all()
        assert set(report.comm.curves) == set(shipped.comm[gpu].curves)
        for key, curve in report.comm.curves.items():
            assert curve.sizes == pytest.approx(shipped.comm[gpu].curves[key].sizes, rel=1e-9), (gpu, key)
            assert curve.seconds == pytest.approx(shipped.comm[gpu].curves[key].seconds, rel=0.01), (gpu, key)


def test_leave_one_gpu_out_is_reported_for_both_directions(vidur_report):
    table = vidur_report.transfer_errors
    assert set(zip(table["predicted"], table["factors_from"])) == {("A100-80GB", "H100-SXM"),
                                                                   ("H100-SXM", "A100-80GB")}
    assert set(table["group"]) == {"QKV", "O", "MLP up", "MLP down", "element-wise", "all-reduce"}
