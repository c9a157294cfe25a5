"""Fit the roofline's efficiency factors and communication curves, per GPU, to measured
kernel timings, and report the error.

Method (docs/latency-model.md has the numbers). Profiles are grouped by GPU (the file-name
prefix, ``a100_...`` / ``h100_...``, resolved through the catalog's aliases, unless ``--gpu``
names one GPU for all files); each GPU is fitted on its own files only:
1. GEMMs (QKV, O, MLP up, MLP down) from Vidur mlp.csv profiles: fit gemm_compute,
   gemm_memory, overlap and kernel_floor_s by least squares on log(predicted / measured),
   weighting each power-of-two band of token counts equally so that the few decode-sized
   points (1-64 tokens) count as much as the densely sampled prefill sizes.
2. Element-wise kernels, per kind (norms, RoPE, activation, add): a bandwidth fraction and a
   floor each, fitted the same way.
3. Communication (Vidur all_reduce.csv and send_recv.csv, every (GPU count, GPUs per node)
   they hold): a continuous, non-decreasing piecewise alpha-beta curve with knots at quarter
   decades of message size (chironsim/perf/comm.py), fitted by linear programming
   (chironsim/perf/comm_fit.py); the report gives, beside each curve's error per size decade,
   the floor: the lowest worst-decade median error any non-decreasing curve can reach on the
   same points, which tells noise in the measurements from error of the model.
4. Fixed per-iteration overhead: fit to the public whole-request latencies for this GPU
   (catalog/reference_latencies.yaml); GPUs without any take the overhead fitted in the same
   run on a GPU that has them.
The report gives, per GPU, the median absolute error per operator group and token range and
per TP, the communication error per GPU count and size decade, per-(model, TP) layer errors, a
leave-one-model-out check, an ablation of the overlap and floor terms (and, on GPUs with an SM
count, of wave-quantised, per-wave-overlap and occupancy variants), and, with two or more
GPUs, leave-one-GPU-out: each GPU predicted with another GPU's factors, which is the expected
error of the transfer rule for unprofiled GPUs.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from scipy.optimize import least_squares, minimize_scalar

from chironsim.catalog import GPU, get_gpu
from chironsim.errors import ChironError
from chironsim.perf.comm import ALL_REDUCE, CommModel
from chironsim.perf.comm_fit import comm_errors, comm_floors, fit_comm, predict_comm
from chironsim.perf.efficiency import ELEMENTWISE_KINDS, Efficiency
from chironsim.perf.profiles import ELEMENTWISE_OPS, GEMM_OPS, Profiles, read_profiles
from chironsim.perf.reference import reference_cases, replay_seconds
from chironsim.perf.roofline import DTYPE_BYTES, operator_time

_B = DTYPE_BYTES
_US = 1e-6  # floors are fitted in microseconds for a well-conditioned problem
GROUP_NAMES = {"attn_pre_proj": "QKV", "attn_post_proj": "O", "mlp_up_proj": "MLP up", "mlp_down_proj": "MLP down"}
KIND_OF_OP = {"input_layernorm": "norm", "post_attention_layernorm": "norm", "attn_rope": "rope",
              "mlp_act": "act", "add": "add"}
TOKEN_RANGES = ("<=64", "65-512", "513-4096", ">4096")


def token_range(tokens) -> np.ndarray:
    t = np.asarray(tokens)
    return np.select([t <= 64, t <= 512, t <= 4096], list(TOKEN_RANGES[:3]), TOKEN_RANGES[3])


@dataclass(frozen=True)
class GPUCalibration:
    """One GPU's fitted factors and curves, and its error tables (percent in *_pct columns)."""

    gpu: str
    efficiency: Efficiency
    comm: CommModel | None
    files: tuple[str, ...]
    group_errors: pd.DataFrame
    tp_errors: pd.DataFrame
    comm_errors: pd.DataFrame
    gemm_errors: pd.DataFrame
    heldout_errors: pd.DataFrame
    ablation: pd.DataFrame
    elementwise_errors: pd.DataFrame
    reference_checks: pd.DataFrame
    notes: tuple[str, ...]
    #: every ablation variant's median absolute error per GEMM group (`_ablation_tables`)
    ablation_groups: pd.DataFrame = field(default_factory=pd.DataFrame)


@dataclass(frozen=True)
class CalibrationReport:
    """Per-GPU calibrations (in fitting order) and the leave-one-GPU-out table."""

    gpus: dict[str, GPUCalibration]
    transfer_errors: pd.DataFrame

    @property
    def only(self) -> GPUCalibration:
        if len(self.gpus) != 1:
            raise ChironError(f"the report holds {len(self.gpus)} GPUs: {sorted(self.gpus)}")
        return next(iter(self.gpus.values()))


# --- GEMMs -------------------------------------------------------------------------------

def _octave_weights(frame: pd.DataFrame, keys: list[str], size: str) -> np.ndarray:
    band = np.floor(np.log2(frame[size].to_numpy(dtype=float)))
    counts = frame.assign(_band=band).groupby(keys + ["_band"])[size].transform("count")
    return 1.0 / np.sqrt(counts.to_numpy(dtype=float))


def _gemm_shapes(ops: pd.DataFrame) -> pd.DataFrame:
    """Per-GPU weight count and activation width (inputs + outputs) of each profiled GEMM."""
    h, tp = ops["n_embd"], ops["tp"]
    head_dim = h / ops["n_head"]
    q = ops["n_head"] / tp * head_dim
    kv = np.ceil(ops["n_kv_head"] / tp) * head_dim
    inter = ops["n_expanded_embd"] / tp
    up = np.where(ops["gated"], 2.0, 1.0) * inter
    rows = {
        "attn_pre_proj": (h, q + 2 * kv), "attn_post_proj": (q, h),
        "mlp_up_proj": (h, up), "mlp_down_proj": (inter, h),
    }
    fan_in = np.select([ops["op"] == op for op in rows], [rows[op][0] for op in rows])
    fan_out = np.select([ops["op"] == op for op in rows], [rows[op][1] for op in rows])
    return ops.assign(weights=fan_in * fan_out, act=fan_in + fan_out, outputs=fan_out)


def _gemm_params(eff: Efficiency) -> np.ndarray:
    return np.array([eff.gemm_compute, eff.gemm_memory, eff.overlap, eff.kernel_floor_s / _US])


#: output tiles (token rows x output columns) a GEMM library chooses among; the wave-quantised
#: ablation variants price each GEMM at the best of them (CUTLASS-style BF16 tensor-core tiles)
GEMM_TILES = ((32, 64), (32, 128), (64, 64), (64, 128), (128, 128), (128, 256), (256, 128))


def wave_quantised_flops(tokens, outputs, fan_in, sms: int, tiles=GEMM_TILES, split_k: bool = False) -> np.ndarray:
    """FLOPs a GEMM of `tokens` x `outputs` x `fan_in` costs when its output is cut into tiles
    that run in waves of `sms` (one tile per SM): every tile of a wave takes as long as a full
    tile, so the work is waves x sms x (2 x tile rows x tile columns x fan_in), with the tile
    shape that needs the least. With `split_k`, a grid of fewer tiles than SMs is split along
    the reduction to fill the GPU (only the row padding to the tile is paid). The calibration
    report's ablation prices GEMMs with this (docs/latency-model.md, section 3); the roofline
    does not (it did not lower the error)."""
    tokens, outputs, fan_in = (np.asarray(a, dtype=float) for a in (tokens, outputs, fan_in))
    best = None
    for rows, cols in tiles:
        grid = np.ceil(tokens / rows) * np.ceil(outputs / cols)
        waves = np.ceil(grid / sms)
        flops = waves * sms * 2.0 * rows * cols * fan_in
        if split_k:
            flops = np.where(grid >= sms, flops, np.ceil(tokens / rows) * rows * 2.0 * outputs * fan_in)
        best = flops if best is None else np.minimum(best, flops)
    return best


def gemm_grid(tokens, outputs, sms: int, tiles=GEMM_TILES) -> np.ndarray:
    """Output tiles in the grid of a `tokens` x `outputs` GEMM cut into the tile shape of `tiles`
    that `wave_quantised_flops` picks (the fewest padded waves x tile area; the first on ties);
    with one shape, simply that shape's tile count. The per-wave-overlap and occupancy ablation
    variants count a GEMM's tiles with this (docs/latency-model.md, section 3)."""
    tokens, outputs = (np.asarray(a, dtype=float) for a in (tokens, outputs))
    best = grid_of_best = None
    for rows, cols in tiles:
        grid = np.ceil(tokens / rows) * np.ceil(outputs / cols)
        padded = np.ceil(grid / sms) * sms * rows * cols
        if best is None:
            best, grid_of_best = padded, grid
        else:
            better = padded < best
            best, grid_of_best = np.where(better, padded, best), np.where(better, grid, grid_of_best)
    return grid_of_best


#: tile sets the per-wave-overlap / occupancy ablation variants count a GEMM's grid in
_GRID_TILES = {"128x128": ((128, 128),), "best": GEMM_TILES}


def _predict_gemm(params: np.ndarray, data: pd.DataFrame, gpu: GPU, waves: str | None = None,
                  mechanism: str | None = None, grid: str = "best") -> np.ndarray:
    """Predicted GEMM seconds; `waves` ("full" or "split-k") prices the compute term with
    `wave_quantised_flops` on the GPU's SMs (ablation only). `mechanism` (ablation only) is
    "per-wave overlap", "occupancy" or both joined by " + ", with the GEMM's grid counted in
    `grid` tiles (`gemm_grid`, GPU.sm_count SMs):
    per-wave overlap: the unhidden share overlap x min(compute, memory) is divided by
    max(1, tiles / SMs)^p (the next wave's operand loads overlap the current wave's math);
    occupancy: compute runs on min(1, tiles / SMs) of the SMs and memory at
    min(1, tiles / (f x SMs)) of the fitted bandwidth (too few CTAs in flight to saturate HBM).
    p and f follow the four common parameters in `params`, in that order."""
    compute_eff, memory_eff, overlap, floor_us = params[:4]
    tokens = data["tokens"].to_numpy(dtype=float)
    flops = 2 * tokens * data["weights"].to_numpy()
    if waves is not None:
        flops = wave_quantised_flops(tokens, data["outputs"].to_numpy(), data["weights"].to_numpy() / data["outputs"].to_numpy(),
                                     gpu.sm_count, split_k=waves == "split-k")
    compute = flops / (gpu.bf16_flops * compute_eff)
    memory = (data["weights"].to_numpy() + tokens * data["act"].to_numpy()) * _B / (gpu.hbm_bytes_per_s * memory_eff)
    if mechanism is None:
        return operator_time(compute, memory, overlap, floor_us * _US)
    parts = mechanism.split(" + ")
    fill = gemm_grid(tokens, data["outputs"].to_numpy(), gpu.sm_count, _GRID_TILES[grid]) / gpu.sm_count
    extra = iter(params[4:])
    exponent = next(extra) if "per-wave overlap" in parts else 0.0
    if "occupancy" in parts:
        ctas_per_sm = next(extra)
        compute = compute / np.minimum(1.0, fill)
        memory = memory / np.minimum(1.0, fill / ctas_per_sm)
    hidden = np.maximum(1.0, fill) ** exponent
    return np.maximum(compute, memory) + overlap * np.minimum(compute, memory) / hidden + floor_us * _US


def _fit_gemm(data: pd.DataFrame, gpu: GPU, overlap: bool = True, floor: bool = True,
              waves: str | None = None, mechanism: str | None = None, grid: str = "best") -> np.ndarray:
    weights = _octave_weights(data, ["model", "tp", "op"], "tokens")
    measured = data["seconds"].to_numpy()
    lower = [0.05, 0.05, 0.0, 0.0]
    upper = [1.0, 1.0, 1.0 if overlap else 1e-12, 100.0 if floor else 1e-12]
    start = [0.7, 0.8, 0.3 if overlap else 0.0, 3.0 if floor else 0.0]
    parts = mechanism.split(" + ") if mechanism else []
    if "per-wave overlap" in parts:  # exponent p of the waves
        lower, upper, start = lower + [0.0], upper + [4.0], start + [0.5]
    if "occupancy" in parts:  # CTAs per SM that saturate HBM
        lower, upper, start = lower + [0.01], upper + [16.0], start + [0.5]
    fit = least_squares(
        lambda p: weights * np.log(_predict_gemm(p, data, gpu, waves, mechanism, grid) / measured), start,
        bounds=(lower, upper)
    )
    params = fit.x.copy()
    params[2] = params[2] if overlap else 0.0
    params[3] = params[3] if floor else 0.0
    return params


#: the ablation's mechanism variants for the 65-512-token residuals (issue 11 item 3): (label, mechanism, grid)
MECHANISM_VARIANTS = (
    ("per-wave overlap, 128x128 grid + floor", "per-wave overlap", "128x128"),
    ("per-wave overlap, best-tile grid + floor", "per-wave overlap", "best"),
    ("occupancy, 128x128 grid + overlap + floor", "occupancy", "128x128"),
    ("occupancy, best-tile grid + overlap + floor", "occupancy", "best"),
    ("per-wave overlap + occupancy, best-tile grid + floor", "per-wave overlap + occupancy", "best"),
)


def _ablation(gemms: pd.DataFrame, gpu: GPU, chosen: np.ndarray) -> pd.DataFrame:
    """The ablation table of `_ablation_tables`."""
    return _ablation_tables(gemms, gpu, chosen)[0]


def _ablation_tables(gemms: pd.DataFrame, gpu: GPU, chosen: np.ndarray) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Refit without the overlap and/or floor terms, to show what each one buys, and, on a GPU
    whose SM count the catalog gives, with the compute term wave-quantised (best of GEMM_TILES;
    with and without split-K filling an underfilled grid) and with the per-wave-overlap and
    occupancy mechanisms of `_predict_gemm` (MECHANISM_VARIANTS). Besides the per-layer error,
    each row has its extra fitted parameters (p: the waves' exponent; f: CTAs per SM that
    saturate HBM) and the worst group's median absolute error over all points and at <= 64
    tokens and 65-512 tokens (the issue's targets are per group). The second table has every
    variant's median absolute error (%) per GEMM group over all points, at <= 64 tokens and at
    65-512 tokens."""
    rows, groups = [], []
    for label, overlap, floor, waves, mechanism, grid, params, predicted in _ablation_fits(gemms, gpu, chosen):
        summary = _layer_errors(gemms, predicted, []).iloc[0].to_dict()
        err = _group_abs_errors(gemms, predicted)
        for group in [g for g in _GROUP_ORDER if g in set(err["group"])]:
            part = err[err["group"] == group]
            groups.append({"variant": label, "group": group, "all_pct": part["abs"].median(),
                           "<=64_pct": part.loc[part["range"] == "<=64", "abs"].median(),
                           "65-512_pct": part.loc[part["range"] == "65-512", "abs"].median()})
        worst = {"worst_group_pct": err.groupby("group")["abs"].median().max()}
        for key, span in (("worst_<=64_pct", "<=64"), ("worst_65-512_pct", "65-512")):
            part = err[err["range"] == span]
            worst[key] = part.groupby("group")["abs"].median().max() if len(part) else np.nan
        parts = mechanism.split(" + ") if mechanism else []
        extra = iter(params[4:])
        rows.append({"variant": label, "gemm_compute": params[0], "gemm_memory": params[1], "overlap": params[2],
                     "kernel_floor_us": params[3],
                     "p": next(extra) if "per-wave overlap" in parts else np.nan,
                     "f": next(extra) if "occupancy" in parts else np.nan,
                     **summary, "points": int(summary["points"]), **worst})
    return pd.DataFrame(rows), pd.DataFrame(groups)


def _ablation_fits(gemms: pd.DataFrame, gpu: GPU, chosen: np.ndarray):
    """(label, overlap, floor, waves, mechanism, grid, fitted params, predicted seconds) per
    ablation variant, the chosen form last."""
    variants = [("max() only", False, False, None, None, "best"), ("max() + kernel floor", False, True, None, None, "best"),
                ("max() + overlap", True, False, None, None, "best")]
    if gpu.sm_count is not None:
        variants += [(f"waves on {gpu.sm_count} SMs + overlap + floor", True, True, "full", None, "best"),
                     (f"waves on {gpu.sm_count} SMs, split-K + overlap + floor", True, True, "split-k", None, "best")]
        variants += [(f"{label} ({gpu.sm_count} SMs)", True, True, None, mechanism, grid)
                     for label, mechanism, grid in MECHANISM_VARIANTS]
    variants.append(("max() + overlap + floor (chosen)", True, True, None, None, "best"))
    for label, overlap, floor, waves, mechanism, grid in variants:
        chosen_form = overlap and floor and waves is None and mechanism is None
        params = chosen if chosen_form else _fit_gemm(gemms, gpu, overlap, floor, waves, mechanism, grid)
        yield label, overlap, floor, waves, mechanism, grid, params, _predict_gemm(params, gemms, gpu, waves, mechanism, grid)


def _group_abs_errors(gemms: pd.DataFrame, predicted: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"group": gemms["op"].map(GROUP_NAMES).to_numpy(), "range": token_range(gemms["tokens"]),
                         "abs": np.abs(predicted / gemms["seconds"].to_numpy() - 1.0) * 100.0})


def _heldout(gemms: pd.DataFrame, gpu: GPU) -> pd.DataFrame:
    """Leave-one-model-out: fit on the other models, report the error on the held-out one."""
    models = sorted(gemms["model"].unique())
    tables = []
    for held in models if len(models) > 1 else []:
        train, test = gemms[gemms["model"] != held], gemms[gemms["model"] == held]
        tables.append(_layer_errors(test, _predict_gemm(_fit_gemm(train, gpu), test, gpu), ["model"]))
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()


def _layer_errors(data: pd.DataFrame, predicted: np.ndarray, by: list[str]) -> pd.DataFrame:
    """Error of the per-layer sum over the ops of each (model, tp, tokens) point."""
    layer = data.assign(predicted=predicted).groupby(["model", "tp", "tokens"], as_index=False)[
        ["predicted", "seconds"]
    ].sum()
    layer["err"] = layer["predicted"] / layer["seconds"] - 1.0
    return _summarise(layer, by, small=layer["tokens"] <= 64)


def _summarise(frame: pd.DataFrame, by: list[str], small: pd.Series | None = None) -> pd.DataFrame:
    frame = frame.assign(abs_err=frame["err"].abs())
    groups = frame.groupby(by) if by else frame.groupby(np.zeros(len(frame)))
    table = groups.agg(points=("err", "size"), mape_pct=("abs_err", "mean"), max_err_pct=("abs_err", "max"),
                       bias_pct=("err", "mean"))
    if small is not None:
        table["mape_small_pct"] = frame[small].groupby(by)["abs_err"].mean() if by else frame[small]["abs_err"].mean()
    for column in [c for c in table.columns if c.endswith("_pct")]:
        table[column] *= 100.0
    return table.reset_index() if by else table.reset_index(drop=True)


# --- element-wise kernels --------------------------------------------------------------

def _elementwise_bytes(ops: pd.DataFrame) -> np.ndarray:
    h, tp = ops["n_embd"], ops["tp"]
    head_dim = h / ops["n_head"]
    q = ops["n_head"] / tp * head_dim
    kv = np.ceil(ops["n_kv_head"] / tp) * head_dim
    act = np.where(ops["gated"], 3.0, 2.0) * ops["n_expanded_embd"] / tp
    width = np.select(
        [ops["op"] == "attn_rope", ops["op"] == "mlp_act", ops["op"] == "add"],
        [2 * (q + kv), act, 3 * h], default=2 * h,
    )
    return ops["tokens"].to_numpy(dtype=float) * width * _B


def _predict_elementwise(eff: Efficiency, ops: pd.DataFrame, gpu: GPU) -> np.ndarray:
    kinds = ops["op"].map(KIND_OF_OP).to_numpy()
    memory = np.array([getattr(eff, f"{k}_memory") for k in kinds])
    floor = np.array([getattr(eff, f"{k}_floor_s") for k in kinds])
    rows = np.array([getattr(eff, f"{k}_rows") for k in kinds])
    tokens = ops["tokens"].to_numpy(dtype=float)
    return floor + np.maximum(tokens, rows) * _elementwise_bytes(ops) / tokens / (gpu.hbm_bytes_per_s * memory)


def _fit_elementwise(ops: pd.DataFrame, gpu: GPU) -> dict[str, float]:
    """A bandwidth fraction, a floor and the fewest rows priced, per kernel kind."""
    fitted: dict[str, float] = {}
    for kind in ELEMENTWISE_KINDS:
        data = ops[ops["op"].map(KIND_OF_OP) == kind]
        tokens = data["tokens"].to_numpy(dtype=float)
        per_token = _elementwise_bytes(data) / tokens
        weights = _octave_weights(data, ["model", "tp", "op"], "tokens")
        measured = data["seconds"].to_numpy()

        def predict(p: np.ndarray) -> np.ndarray:
            return p[1] * _US + np.maximum(tokens, p[2]) * per_token / (gpu.hbm_bytes_per_s * p[0])

        fit = least_squares(lambda p: weights * np.log(predict(p) / measured), [0.5, 3.0, 100.0],
                            bounds=([0.01, 0.0, 1.0], [1.0, 100.0, 2000.0]))
        fitted[f"{kind}_memory"], fitted[f"{kind}_floor_s"] = float(fit.x[0]), float(fit.x[1] * _US)
        fitted[f"{kind}_rows"] = float(fit.x[2])
    return fitted


# --- per-group error tables ------------------------------------------------------------------

def _point_errors(eff: Efficiency, comm: CommModel | None, gemms: pd.DataFrame, elementwise: pd.DataFrame,
                  reduces: pd.DataFrame, gpu: GPU) -> pd.DataFrame:
    """One row per measured point of each operator group: group, tp (GPUs for all-reduce),
    tokens (message bytes for all-reduce), signed error."""
    frames = []
    if len(gemms):
        predicted = _predict_gemm(_gemm_params(eff), gemms, gpu)
        frames.append(pd.DataFrame({"group": gemms["op"].map(GROUP_NAMES).to_numpy(), "tp": gemms["tp"].to_numpy(),
                                    "tokens": gemms["tokens"].to_numpy(),
                                    "err": predicted / gemms["seconds"].to_numpy() - 1.0}))
    if len(elementwise):
        layer = elementwise.assign(predicted=_predict_elementwise(eff, elementwise, gpu)).groupby(
            ["model", "tp", "tokens"], as_index=False)[["predicted", "seconds"]].sum()
        frames.append(pd.DataFrame({"group": "element-wise", "tp": layer["tp"].to_numpy(),
                                    "tokens": layer["tokens"].to_numpy(),
                                    "err": layer["predicted"].to_numpy() / layer["seconds"].to_numpy() - 1.0}))
    intra = reduces[(reduces["collective"] == ALL_REDUCE) & (reduces["devices_per_node"] == reduces["workers"])]
    if comm is not None and len(intra):
        frames.append(pd.DataFrame({"group": "all-reduce", "tp": intra["workers"].to_numpy(),
                                    "tokens": np.nan,
                                    "err": predict_comm(comm, intra) / intra["seconds"].to_numpy() - 1.0}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["group", "tp", "tokens", "err"])


_GROUP_ORDER = ["QKV", "O", "MLP up", "MLP down", "element-wise", "all-reduce"]


def _group_table(points: pd.DataFrame) -> pd.DataFrame:
    """Median absolute error (%) per operator group, by token range and overall."""
    data = points.assign(abs_pct=points["err"].abs() * 100.0)
    data["range"] = np.where(data["tokens"].isna(), "", token_range(data["tokens"].fillna(0)))
    table = data[data["range"] != ""].pivot_table(index="group", columns="range", values="abs_pct", aggfunc="median")
    table = table.reindex(index=sorted(set(data["group"])), columns=[r for r in TOKEN_RANGES if r in table.columns])
    table.columns = [f"{c}_pct" for c in table.columns]
    table["all_pct"] = data.groupby("group")["abs_pct"].median()
    table["bias_pct"] = data.groupby("group")["err"].median() * 100.0
    table["points"] = data.groupby("group").size()
    table = table.reindex([g for g in _GROUP_ORDER if g in table.index])
    return table.rename_axis("group").reset_index()


def _tp_table(points: pd.DataFrame) -> pd.DataFrame:
    data = points.assign(abs_pct=points["err"].abs() * 100.0)
    table = data.pivot_table(index="group", columns="tp", values="abs_pct", aggfunc="median")
    table.columns = [f"tp{int(c)}_pct" for c in table.columns]
    table = table.reindex([g for g in _GROUP_ORDER if g in table.index])
    return table.reset_index().rename(columns={"index": "group"})


# --- overhead and the whole fit ----------------------------------------------------------------

def _fit_overhead(gpu: GPU, efficiency: Efficiency, comm: CommModel | None) -> tuple[float | None, pd.DataFrame]:
    cases = [c for c in reference_cases() if get_gpu(c.gpu).name == gpu.name]
    if not cases:
        return None, pd.DataFrame(columns=["case", "measured_ms", "roofline_ms", "calibrated_ms", "error_pct"])
    bare = efficiency.replace(iteration_overhead_s=0.0)
    predicted = np.array([replay_seconds(c, bare, comm) for c in cases])
    measured = np.array([c.measured_s for c in cases])
    iterations = np.array([c.iterations for c in cases], dtype=float)
    fit = minimize_scalar(lambda o: float(np.sum(np.log((predicted + iterations * o) / measured) ** 2)),
                          bounds=(0.0, 0.05), method="bounded", options={"xatol": 1e-7})
    overhead = float(fit.x)
    calibrated = predicted + iterations * overhead
    table = pd.DataFrame({
        "case": [c.name for c in cases], "measured_ms": measured * 1e3, "roofline_ms": predicted * 1e3,
        "calibrated_ms": calibrated * 1e3, "error_pct": (calibrated / measured - 1.0) * 100.0,
    })
    return overhead, table


def _split(profiles: Profiles):
    ops = profiles.operators
    gemms = _gemm_shapes(ops[ops["op"].isin(GEMM_OPS)]) if len(ops) else ops
    elementwise = ops[ops["op"].isin(ELEMENTWISE_OPS)] if len(ops) else ops
    return gemms, elementwise, profiles.all_reduce


def calibrate_gpu(profiles: Profiles, gpu: GPU, overhead_s: float | None = None,
                  overhead_from: str | None = None, comm_fallback: CommModel | None = None) -> GPUCalibration:
    """Fit one GPU's factors and curves to its profiles."""
    notes: list[str] = []
    gemms, elementwise, reduces = _split(profiles)
    if len(gemms) < 8:
        raise ChironError(f"calibration of {gpu.name} needs a Vidur mlp.csv profile with GEMM timings (attn_pre_proj, ...)")
    params = _fit_gemm(gemms, gpu)
    gemm_errors = _layer_errors(gemms, _predict_gemm(params, gemms, gpu), ["model", "tp"])
    ablation, ablation_groups = _ablation_tables(gemms, gpu, params)
    heldout = _heldout(gemms, gpu)
    if heldout.empty:
        notes.append("only one model profiled: no leave-one-model-out check")

    if len(elementwise):
        kinds = _fit_elementwise(elementwise, gpu)
    else:
        kinds = {k: v for k, v in Efficiency.default().to_mapping().items() if k.split("_")[0] in ELEMENTWISE_KINDS}
        kinds = {k: v for k, v in kinds.items() if not k.startswith("gemm")}
        notes.append("no element-wise timings: element-wise factors kept from the shipped default")

    floors = comm_floors(reduces) if len(reduces) else {}
    comm = fit_comm(reduces, gpu, floors) if len(reduces) else None
    if comm is None or not comm.curves:
        comm = None
        notes.append("no all-reduce or send/recv timings: communication priced by the transfer rule")

    efficiency = Efficiency(
        gemm_compute=float(params[0]), gemm_memory=float(params[1]), overlap=float(params[2]),
        kernel_floor_s=float(params[3] * _US), **kinds, iteration_overhead_s=0.0,
    )
    overhead, references = _fit_overhead(gpu, efficiency, comm)
    if overhead is not None:
        efficiency = efficiency.replace(iteration_overhead_s=overhead)
        notes.append(f"iteration_overhead_s fitted to {len(references)} public whole-request latencies on {gpu.name}")
    elif overhead_s is not None:
        efficiency = efficiency.replace(iteration_overhead_s=overhead_s)
        notes.append(f"no public whole-request latencies for {gpu.name}: iteration_overhead_s taken from {overhead_from}")
    else:
        efficiency = efficiency.replace(iteration_overhead_s=Efficiency.default().iteration_overhead_s)
        notes.append(f"no public whole-request latencies for {gpu.name}: iteration_overhead_s kept from the shipped default")

    element_points = elementwise.assign(
        err=_predict_elementwise(efficiency, elementwise, gpu) / elementwise["seconds"].to_numpy() - 1.0,
        kind=elementwise["op"].map(KIND_OF_OP)) if len(elementwise) else pd.DataFrame()
    if len(element_points):
        element_points = element_points.assign(abs_pct=element_points["err"].abs() * 100.0,
                                                range=token_range(element_points["tokens"]))
        elementwise_errors = element_points.pivot_table(index="kind", columns="range", values="abs_pct",
                                                        aggfunc="median")
        elementwise_errors = elementwise_errors.reindex(columns=[r for r in TOKEN_RANGES if r in elementwise_errors])
        elementwise_errors.columns = [f"{c}_pct" for c in elementwise_errors.columns]
        elementwise_errors["all_pct"] = element_points.groupby("kind")["abs_pct"].median()
        elementwise_errors["bias_pct"] = element_points.groupby("kind")["err"].median() * 100.0
        elementwise_errors = elementwise_errors.reindex(list(ELEMENTWISE_KINDS)).reset_index()
    else:
        elementwise_errors = pd.DataFrame()

    points = _point_errors(efficiency, comm, gemms, elementwise, reduces, gpu)
    return GPUCalibration(
        gpu=gpu.name, efficiency=efficiency, comm=comm, files=tuple(p.name for p in profiles.files),
        group_errors=_group_table(points), tp_errors=_tp_table(points),
        comm_errors=comm_errors(comm, reduces, floors) if comm is not None else pd.DataFrame(),
        gemm_errors=gemm_errors, heldout_errors=heldout, ablation=ablation, elementwise_errors=elementwise_errors,
        reference_checks=references, notes=tuple(notes), ablation_groups=ablation_groups,
    )


def gpu_of_file(path: Path) -> GPU:
    """The GPU a Vidur profile copy was measured on, from its name (``a100_...``, ``h100_dgx_...``)."""
    match = re.match(r"^([A-Za-z0-9]+)_", path.name)
    if not match:
        raise ChironError(f"{path}: cannot tell the GPU from the file name (expected a prefix such as a100_); "
                          "pass --gpu")
    try:
        return get_gpu(match.group(1))
    except ChironError as err:
        raise ChironError(f"{path}: file-name prefix {match.group(1)!r}: {err}; pass --gpu") from None


def calibrate(profile_paths: list[Path] | list[str], gpu: GPU | None = None) -> CalibrationReport:
    """Fit every GPU the profiles cover (all of them as `gpu` when given) and cross-check them."""
    paths = [Path(p) for p in profile_paths]
    groups: dict[str, tuple[GPU, list[Path]]] = {}
    for path in paths:
        target = gpu if gpu is not None else gpu_of_file(path)
        groups.setdefault(target.name, (target, []))[1].append(path)
    profiles = {name: read_profiles(files) for name, (_, files) in groups.items()}
    # GPUs with public whole-request latencies first: the others borrow their overhead
    order = sorted(groups, key=lambda n: not any(get_gpu(c.gpu).name == n for c in reference_cases()))
    fitted: dict[str, GPUCalibration] = {}
    overhead, source = None, None
    for name in order:
        result = calibrate_gpu(profiles[name], groups[name][0], overhead, source)
        if overhead is None and not result.reference_checks.empty:
            overhead, source = result.efficiency.iteration_overhead_s, f"{name} (same run)"
        fitted[name] = result
    transfer = _transfer_table(fitted, profiles, {n: g for n, (g, _) in groups.items()})
    return CalibrationReport(gpus=fitted, transfer_errors=transfer)


def _transfer_table(fitted: dict[str, GPUCalibration], profiles: dict[str, Profiles],
                    specs: dict[str, GPU]) -> pd.DataFrame:
    """Leave-one-GPU-out: predict each GPU's points with another GPU's factors and curves."""
    rows = []
    for target, source in [(t, s) for t in fitted for s in fitted if s != t]:
        gpu = specs[target]
        gemms, elementwise, reduces = _split(profiles[target])
        comm = fitted[source].comm.for_link(gpu.name, gpu.link_bytes_per_s) if fitted[source].comm else None
        points = _point_errors(fitted[source].efficiency, comm, gemms, elementwise, reduces, gpu)
        table = _group_table(points)
        for row in table.to_dict(orient="records"):
            rows.append({"predicted": target, "factors_from": source, **row})
    return pd.DataFrame(rows)


# --- report and command ------------------------------------------------------------------------

def _markdown(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "(none)"

    def cell(column: str, value: object) -> str:
        if isinstance(value, (float, np.floating)):
            if np.isnan(value):
                return "—"
            return f"{value:.1f}" if column.endswith(("_pct", "_ms")) else f"{value:.3g}"
        return str(value)

    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(c, v) for c, v in zip(frame.columns, row)) + " |"
              for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def format_gpu(report: GPUCalibration) -> str:
    factors = pd.DataFrame([{"factor": k, "value": v} for k, v in report.efficiency.to_mapping().items()])
    sections = [
        f"## {report.gpu} (from {', '.join(report.files)})",
        "Fitted efficiency factors:\n\n" + _markdown(factors),
        "Median absolute error (%) per operator group and token range (element-wise: per-layer sum of the "
        "5 kernels; all-reduce: every single-node profile point):\n\n" + _markdown(report.group_errors),
        "Median absolute error (%) per operator group and TP (all-reduce: GPU count):\n\n"
        + _markdown(report.tp_errors),
        "Communication: median absolute error (%) per collective, GPU count, GPUs per node and message-size "
        "decade (1eK: K <= log10(bytes) < K+1):\n\n" + _markdown(report.comm_errors),
        "Element-wise kernels by kind, median absolute error (%):\n\n" + _markdown(report.elementwise_errors),
        "Per-layer linear time (QKV + O + up + down GEMMs), predicted vs measured, by model and TP "
        "(mape_small_pct: points with <= 64 tokens):\n\n" + _markdown(report.gemm_errors),
        "Leave-one-model-out (fit on the other models, error on this one):\n\n" + _markdown(report.heldout_errors),
        "Ablation of the GEMM time formula (all profiled points):\n\n" + _markdown(report.ablation),
        "Ablation, median absolute error (%) per GEMM group and variant:\n\n" + _markdown(report.ablation_groups),
        "Whole requests vs public measurements (roofline_ms: without the per-iteration overhead):\n\n"
        + _markdown(report.reference_checks),
        "Notes:\n" + "\n".join(f"- {n}" for n in report.notes),
    ]
    return "\n\n".join(sections)


def format_report(report: CalibrationReport | GPUCalibration) -> str:
    """The report as Markdown: per GPU its factors and error tables, then leave-one-GPU-out."""
    if isinstance(report, GPUCalibration):
        return format_gpu(report) + "\n"
    parts = [format_gpu(r) for r in report.gpus.values()]
    if not report.transfer_errors.empty:
        parts.append("## Leave-one-GPU-out (the transfer rule's expected error): each GPU's points predicted "
                     "with the other GPU's factors and communication curves (re-targeted to its link rate), "
                     "median absolute error (%)\n\n" + _markdown(report.transfer_errors))
    return "\n\n".join(parts) + "\n"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def calibration_document(report: CalibrationReport, paths: list[str], command: str) -> dict:
    """What `--write` stores: per GPU its factors and curves, with provenance."""
    ordered = sorted(report.gpus.values(), key=lambda r: r.reference_checks.empty)
    gpus = {}
    for result in report.gpus.values():
        block: dict = {"efficiency": {k: float(f"{v:.6g}") for k, v in result.efficiency.to_mapping().items()}}
        if result.comm is not None:
            block["comm"] = result.comm.to_mapping()
        block["median_abs_error_pct"] = {row.group: round(float(row.all_pct), 1)
                                         for row in result.group_errors.itertuples(index=False)}
        gpus[result.gpu] = block
    return {
        "generated_by": command,
        "date": datetime.date.today().isoformat(),
        "default_gpu": ordered[0].gpu,
        "profiles": {Path(p).name: _sha256(Path(p)) for p in paths},
        "gpus": gpus,
    }


def calibrate_command(paths: list[str], gpu: str | None, write: str | None) -> str:
    """What `chironsim calibrate PROFILE... [--gpu GPU] [--write FILE]` prints; writes FILE if given."""
    target = get_gpu(gpu) if gpu is not None else None
    report = calibrate([Path(p) for p in paths], target)
    text = format_report(report)
    if write is not None:
        shown = [p if not Path(p).is_absolute() else Path(p).name for p in [*paths, write]]
        option = f" --gpu {gpu}" if gpu is not None else ""
        command = f"chironsim calibrate {' '.join(shown[:-1])}{option} --write {shown[-1]}"
        header = ("# Efficiency factors and communication curves fitted by chironsim.perf.calibrate, per GPU;\n"
                  "# see docs/latency-model.md. Regenerate with the command below; do not edit by hand.\n")
        document = calibration_document(report, paths, command)
        Path(write).write_text(header + yaml.safe_dump(document, sort_keys=False, width=100), encoding="utf-8")
        text += f"\nwrote {write}\n"
    return text


def main(argv: list[str] | None = None) -> None:
    """`python -m chironsim.perf.calibrate`, the same as `chironsim calibrate`."""
    parser = argparse.ArgumentParser(prog="chironsim calibrate", description=__doc__.splitlines()[0])
    parser.add_argument("profiles", nargs="+")
    parser.add_argument("--gpu", default=None)
    parser.add_argument("--write", default=None)
    args = parser.parse_args(argv)
    print(calibrate_command(args.profiles, args.gpu, args.write), end="")


if __name__ == "__main__":
    main()
