"""Fit the roofline's efficiency factors to measured kernel timings and report the error.

Method (docs/latency-model.md has the numbers):
1. GEMMs (QKV, O, MLP up, MLP down) from Vidur mlp.csv profiles: fit gemm_compute,
   gemm_memory, overlap and kernel_floor_s by least squares on log(predicted / measured),
   weighting each power-of-two band of token counts equally so that the few decode-sized
   points (1-64 tokens) count as much as the densely sampled prefill sizes.
2. Element-wise kernels (norms, RoPE, activation, add): fit elementwise_memory and
   elementwise_floor_s the same way.
3. All-reduce (Vidur all_reduce.csv, single-node rows): fit allreduce_latency_s and link.
4. Fixed per-iteration overhead: fit to the public whole-request latencies for this GPU
   (catalog/reference_latencies.yaml); the kernel fit says nothing about scheduler cost.
The report gives per-(model, TP) errors of per-layer linear time, a leave-one-model-out
check, an ablation of the overlap and floor terms, and the whole-request comparison.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from scipy.optimize import least_squares, minimize_scalar

from chironsim.catalog import GPU, get_gpu
from chironsim.errors import ChironError
from chironsim.perf.efficiency import Efficiency
from chironsim.perf.profiles import ELEMENTWISE_OPS, GEMM_OPS, Profiles, read_profiles
from chironsim.perf.reference import reference_cases, replay_seconds
from chironsim.perf.roofline import DTYPE_BYTES, operator_time

_B = DTYPE_BYTES
_US = 1e-6  # the kernel floor is fitted in microseconds for a well-conditioned problem


@dataclass(frozen=True)
class CalibrationReport:
    """Fitted factors and the error tables (DataFrames; percentages in *_pct columns)."""

    gpu: str
    efficiency: Efficiency
    files: tuple[str, ...]
    gemm_errors: pd.DataFrame
    heldout_errors: pd.DataFrame
    ablation: pd.DataFrame
    elementwise_errors: pd.DataFrame
    allreduce_errors: pd.DataFrame
    reference_checks: pd.DataFrame
    notes: tuple[str, ...]


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
    return ops.assign(weights=fan_in * fan_out, act=fan_in + fan_out)


def _predict_gemm(params: np.ndarray, data: pd.DataFrame, gpu: GPU) -> np.ndarray:
    compute_eff, memory_eff, overlap, floor_us = params
    tokens = data["tokens"].to_numpy(dtype=float)
    compute = 2 * tokens * data["weights"].to_numpy() / (gpu.bf16_flops * compute_eff)
    memory = (data["weights"].to_numpy() + tokens * data["act"].to_numpy()) * _B / (gpu.hbm_bytes_per_s * memory_eff)
    return operator_time(compute, memory, overlap, floor_us * _US)


def _fit_gemm(data: pd.DataFrame, gpu: GPU, overlap: bool = True, floor: bool = True) -> np.ndarray:
    weights = _octave_weights(data, ["model", "tp", "op"], "tokens")
    measured = data["seconds"].to_numpy()
    lower = [0.05, 0.05, 0.0, 0.0]
    upper = [1.0, 1.0, 1.0 if overlap else 1e-12, 100.0 if floor else 1e-12]
    start = [0.7, 0.8, 0.3 if overlap else 0.0, 3.0 if floor else 0.0]
    fit = least_squares(
        lambda p: weights * np.log(_predict_gemm(p, data, gpu) / measured), start, bounds=(lower, upper)
    )
    params = fit.x.copy()
    params[2] = params[2] if overlap else 0.0
    params[3] = params[3] if floor else 0.0
    return params


def _ablation(gemms: pd.DataFrame, gpu: GPU, chosen: np.ndarray) -> pd.DataFrame:
    """Refit without the overlap and/or floor terms, to show what each one buys."""
    rows = []
    for label, overlap, floor in [("max() only", False, False), ("max() + kernel floor", False, True),
                                  ("max() + overlap", True, False), ("max() + overlap + floor (chosen)", True, True)]:
        params = chosen if (overlap and floor) else _fit_gemm(gemms, gpu, overlap, floor)
        summary = _layer_errors(gemms, _predict_gemm(params, gemms, gpu), []).iloc[0].to_dict()
        rows.append({"variant": label, "gemm_compute": params[0], "gemm_memory": params[1], "overlap": params[2],
                     "kernel_floor_us": params[3], **summary, "points": int(summary["points"])})
    return pd.DataFrame(rows)


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


def _elementwise(ops: pd.DataFrame, gpu: GPU) -> tuple[float, float, pd.DataFrame]:
    h, tp = ops["n_embd"], ops["tp"]
    head_dim = h / ops["n_head"]
    q = ops["n_head"] / tp * head_dim
    kv = np.ceil(ops["n_kv_head"] / tp) * head_dim
    act = np.where(ops["gated"], 3.0, 2.0) * ops["n_expanded_embd"] / tp
    width = np.select(
        [ops["op"] == "attn_rope", ops["op"] == "mlp_act", ops["op"] == "add"],
        [2 * (q + kv), act, 3 * h], default=2 * h,
    )
    bytes_moved = ops["tokens"].to_numpy(dtype=float) * width * _B
    weights = _octave_weights(ops, ["model", "tp", "op"], "tokens")
    measured = ops["seconds"].to_numpy()

    def predict(p: np.ndarray) -> np.ndarray:
        return p[1] * _US + bytes_moved / (gpu.hbm_bytes_per_s * p[0])

    fit = least_squares(lambda p: weights * np.log(predict(p) / measured), [0.5, 3.0],
                        bounds=([0.01, 0.0], [1.0, 100.0]))
    return float(fit.x[0]), float(fit.x[1] * _US), _layer_errors(ops, predict(fit.x), ["model", "tp"])


def _all_reduce(reduces: pd.DataFrame, gpu: GPU) -> tuple[float, float, pd.DataFrame]:
    data = reduces[(reduces["devices_per_node"] == reduces["workers"]) & (reduces["workers"] >= 2)]
    ring = 2 * (data["workers"] - 1) / data["workers"]
    volume = (ring * data["size"]).to_numpy(dtype=float)
    weights = _octave_weights(data, ["workers"], "size")
    measured = data["seconds"].to_numpy()

    def predict(p: np.ndarray) -> np.ndarray:
        return p[0] * _US + volume / (gpu.link_bytes_per_s * p[1])

    fit = least_squares(lambda p: weights * np.log(predict(p) / measured), [20.0, 0.7],
                        bounds=([0.0, 0.01], [1000.0, 1.0]))
    table = _summarise(data.assign(err=predict(fit.x) / measured - 1.0), ["workers"])
    return float(fit.x[0] * _US), float(fit.x[1]), table


def _fit_overhead(gpu: GPU, efficiency: Efficiency) -> tuple[float | None, pd.DataFrame]:
    cases = [c for c in reference_cases() if get_gpu(c.gpu).name == gpu.name]
    if not cases:
        return None, pd.DataFrame(columns=["case", "measured_ms", "roofline_ms", "calibrated_ms", "error_pct"])
    bare = efficiency.replace(iteration_overhead_s=0.0)
    predicted = np.array([replay_seconds(c, bare) for c in cases])
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


def calibrate(profile_paths: list[Path] | list[str], gpu: GPU) -> CalibrationReport:
    """Fit every efficiency factor the profiles (and the reference latencies) determine."""
    profiles: Profiles = read_profiles(profile_paths)
    notes: list[str] = []
    fallback = Efficiency.default()
    ops = profiles.operators
    gemms = _gemm_shapes(ops[ops["op"].isin(GEMM_OPS)]) if len(ops) else ops
    if len(gemms) < 8:
        raise ChironError("calibration needs a Vidur mlp.csv profile with GEMM timings (attn_pre_proj, ...)")
    params = _fit_gemm(gemms, gpu)
    gemm_errors = _layer_errors(gemms, _predict_gemm(params, gemms, gpu), ["model", "tp"])

    ablation = _ablation(gemms, gpu, params)
    heldout = _heldout(gemms, gpu)
    if heldout.empty:
        notes.append("only one model profiled: no leave-one-model-out check")

    elementwise = ops[ops["op"].isin(ELEMENTWISE_OPS)]
    if len(elementwise):
        elementwise_eff, elementwise_floor, elementwise_errors = _elementwise(elementwise, gpu)
    else:
        elementwise_eff, elementwise_floor = fallback.elementwise_memory, fallback.elementwise_floor_s
        elementwise_errors = pd.DataFrame()
        notes.append("no element-wise timings: element-wise factors kept from the shipped default")

    single_node = profiles.all_reduce[profiles.all_reduce["devices_per_node"] == profiles.all_reduce["workers"]]
    if len(single_node[single_node["workers"] >= 2]) >= 4:
        latency, link, allreduce_errors = _all_reduce(profiles.all_reduce, gpu)
    else:
        latency, link, allreduce_errors = fallback.allreduce_latency_s, fallback.link, pd.DataFrame()
        notes.append("no single-node all-reduce timings: link and allreduce_latency_s kept from the shipped default")

    efficiency = Efficiency(
        gemm_compute=float(params[0]), gemm_memory=float(params[1]), overlap=float(params[2]),
        kernel_floor_s=float(params[3] * _US), elementwise_memory=elementwise_eff,
        elementwise_floor_s=elementwise_floor, link=link,
        allreduce_latency_s=latency, iteration_overhead_s=fallback.iteration_overhead_s,
    )
    overhead, references = _fit_overhead(gpu, efficiency)
    if overhead is None:
        notes.append(f"no public whole-request latencies for {gpu.name}: iteration_overhead_s kept from the shipped default")
    else:
        efficiency = efficiency.replace(iteration_overhead_s=overhead)
        notes.append(f"iteration_overhead_s fitted to {len(references)} public whole-request latencies on {gpu.name}")
    return CalibrationReport(
        gpu=gpu.name, efficiency=efficiency, files=tuple(p.name for p in profiles.files),
        gemm_errors=gemm_errors, heldout_errors=heldout, ablation=ablation, elementwise_errors=elementwise_errors,
        allreduce_errors=allreduce_errors, reference_checks=references, notes=tuple(notes),
    )


def _markdown(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "(none)"

    def cell(column: str, value: object) -> str:
        if isinstance(value, (float, np.floating)):
            return f"{value:.1f}" if column.endswith(("_pct", "_ms")) else f"{value:.3g}"
        return str(value)

    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(c, v) for c, v in zip(frame.columns, row)) + " |"
              for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def format_report(report: CalibrationReport) -> str:
    """The report as Markdown: fitted factors, then each error table."""
    factors = pd.DataFrame([{"factor": k, "value": v} for k, v in report.efficiency.to_mapping().items()])
    sections = [
        f"Calibration for {report.gpu} from {', '.join(report.files)}",
        "Fitted efficiency factors:\n\n" + _markdown(factors),
        "Per-layer linear time (QKV + O + up + down GEMMs), predicted vs measured, by model and TP "
        "(mape_small_pct: points with <= 64 tokens):\n\n" + _markdown(report.gemm_errors),
        "Leave-one-model-out (fit on the other models, error on this one):\n\n" + _markdown(report.heldout_errors),
        "Ablation of the GEMM time formula (all profiled points):\n\n" + _markdown(report.ablation),
        "Per-layer element-wise time (2 norms, RoPE, activation, add):\n\n" + _markdown(report.elementwise_errors),
        "All-reduce, single node, by number of GPUs:\n\n" + _markdown(report.allreduce_errors),
        "Whole requests vs public measurements (roofline_ms: without the per-iteration overhead):\n\n"
        + _markdown(report.reference_checks),
        "Notes:\n" + "\n".join(f"- {n}" for n in report.notes),
    ]
    return "\n\n".join(sections) + "\n"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def calibrate_command(paths: list[str], gpu: str, write: str | None) -> str:
    """What `chironsim calibrate PROFILE... --gpu GPU [--write FILE]` prints; writes FILE if given."""
    target = get_gpu(gpu)
    report = calibrate([Path(p) for p in paths], target)
    text = format_report(report)
    if write is not None:
        shown = [p if not Path(p).is_absolute() else Path(p).name for p in [*paths, write]]
        command = f"chironsim calibrate {' '.join(shown[:-1])} --gpu {gpu} --write {shown[-1]}"
        document = {
            "generated_by": command,
            "date": datetime.date.today().isoformat(),
            "gpu": report.gpu,
            "profiles": {Path(p).name: _sha256(Path(p)) for p in paths},
            "efficiency": {k: float(f"{v:.6g}") for k, v in report.efficiency.to_mapping().items()},
            "gemm_layer_mape_pct": round(float(report.gemm_errors["mape_pct"].mean()), 2),
        }
        header = "# Efficiency factors fitted by chironsim.perf.calibrate; see docs/latency-model.md.\n"
        Path(write).write_text(header + yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
        text += f"\nwrote {write}\n"
    return text


def main(argv: list[str] | None = None) -> None:
    """`python -m chironsim.perf.calibrate` until the CLI exposes `chironsim calibrate`."""
    parser = argparse.ArgumentParser(prog="chironsim calibrate", description=__doc__.splitlines()[0])
    parser.add_argument("profiles", nargs="+")
    parser.add_argument("--gpu", default="a100-80gb")
    parser.add_argument("--write", default=None)
    args = parser.parse_args(argv)
    print(calibrate_command(args.profiles, args.gpu, args.write), end="")


if __name__ == "__main__":
    main()
