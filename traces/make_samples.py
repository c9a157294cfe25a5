"""Fit simple models to two public traces and write small *synthetic* samples from the fits.

The package must run without the real traces, and the repository must not contain copies of
them. So this script reads the real files (by default from ``../shared/traces`` beside the
repository), fits a few parameters, and writes:

- ``azure_conv_fit.yaml``: gamma arrivals and lognormal lengths fitted to the Azure LLM
  inference 2023 conversation trace; its ``stream`` key is a valid ``synthetic`` stream.
- ``azure_conv_sample.csv``: 4,000 requests drawn from that fit by chironsim's own generator,
  written in the Azure CSV format.
- ``mooncake_conv_fit.yaml`` and ``mooncake_conv_sample.jsonl``: the same for the Mooncake
  conversation trace, plus a prefix-sharing model for ``hash_ids``.

Fit quality (KS statistics, quantiles) is written into the YAML files and README.md.
Run: ``python traces/make_samples.py [--source-dir DIR]``. Deterministic (fixed seeds).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import math
import sys
from pathlib import Path

import numpy as np
import yaml
from scipy import stats

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
if str(REPO_ROOT) not in sys.path:  # a script run from a checkout, not an installed package
    sys.path.insert(0, str(REPO_ROOT))

from chironsim.workload import SyntheticStream, WorkloadConfig, build_workload  # noqa: E402
from chironsim.workload.readers import read_trace  # noqa: E402

AZURE_SAMPLE_ROWS = 4000
MOONCAKE_SAMPLE_ROWS = 600
AZURE_SEED = 20231116
MOONCAKE_SEED = 20250221
MOONCAKE_BLOCK_TOKENS = 512  # Mooncake's hash_ids cover 512-token blocks (its README)
SAMPLE_EPOCH = dt.datetime(2000, 1, 1)  # an obviously synthetic date for the sample's clock
QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9, 0.99)


def sig(value: float, digits: int = 5) -> float:
    """Round to significant digits, so the YAML shows what the fit can support."""
    if value == 0 or not math.isfinite(value):
        return float(value)
    return float(f"{value:.{digits}g}")



def synthetic_stream(arrival: dict, prompt_fit: dict, output_fit: dict, max_prompt: int,
                     max_output: int, duration: float) -> dict:
    """A chironsim ``synthetic`` stream with lognormal lengths from two fits."""
    return {
        "kind": "synthetic",
        "arrival": arrival,
        "prompt_tokens": {"kind": "lognormal", "median": sig(prompt_fit["median"]),
                          "sigma": sig(prompt_fit["sigma"])},
        "output_tokens": {"kind": "lognormal", "median": sig(output_fit["median"]),
                          "sigma": sig(output_fit["sigma"])},
        "max_prompt_tokens": max_prompt,
        "max_output_tokens": max_output,
        "duration_s": sig(duration),
    }

def sha256_16(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def load(path: Path, fmt: str) -> dict[str, np.ndarray]:
    arrivals, prompts, outputs, hashes = [], [], [], []
    for row in read_trace(path, fmt):
        arrivals.append(row.arrival)
        prompts.append(row.prompt_tokens)
        outputs.append(row.output_tokens)
        hashes.append(row.prefix_hashes)
    order = np.argsort(arrivals, kind="stable")
    return {
        "arrival": np.asarray(arrivals)[order] - min(arrivals),
        "prompt": np.asarray(prompts)[order],
        "output": np.asarray(outputs)[order],
        "hashes": [hashes[i] for i in order],
    }


def fit_lognormal(values: np.ndarray) -> dict[str, float]:
    """Maximum-likelihood lognormal: mean and std (ddof 0) of log(length)."""
    logs = np.log(values)
    return {"median": float(np.exp(logs.mean())), "sigma": float(logs.std())}


def length_quality(values: np.ndarray, fit: dict[str, float], upper: int, rng: np.random.Generator) -> dict:
    """KS of the continuous fit against the data, and quantiles of data vs the clipped model."""
    ks = stats.kstest(values, "lognorm", args=(fit["sigma"], 0, fit["median"])).statistic
    model = np.clip(np.rint(rng.lognormal(math.log(fit["median"]), fit["sigma"], 200_000)), 1, upper)
    return {
        "ks_statistic": sig(float(ks), 3),
        "quantiles": {
            f"p{round(q * 100)}": {"trace": sig(float(np.quantile(values, q)), 4),
                                   "fit": sig(float(np.quantile(model, q)), 4)}
            for q in QUANTILES
        },
        "mean": {"trace": sig(float(values.mean()), 4), "fit": sig(float(model.mean()), 4)},
    }


def per_minute_cv(arrivals: np.ndarray) -> float:
    counts = np.bincount((arrivals // 60).astype(int))[:-1]  # drop the partial last minute
    return float(counts.std() / counts.mean())


def fit_azure(source: Path) -> dict:
    data = load(source, "azure")
    gaps = np.diff(data["arrival"])
    duration = float(data["arrival"][-1])
    rate = len(data["arrival"]) / duration
    cv = float(gaps.std(ddof=1) / gaps.mean())
    shape = 1 / cv**2
    gap_ks = stats.kstest(gaps, "gamma", args=(shape, 0, 1 / (rate * shape))).statistic
    prompt_fit, output_fit = fit_lognormal(data["prompt"]), fit_lognormal(data["output"])
    max_prompt, max_output = int(data["prompt"].max()), int(data["output"].max())
    rng = np.random.default_rng(0)
    return {
        "source": {
            "file": source.name,
            "origin": "Azure/AzurePublicDataset data/AzureLLMInferenceTrace_conv.csv",
            "licence": "CC-BY-4.0",
            "sha256_16": sha256_16(source),
            "rows": len(data["arrival"]),
            "duration_s": sig(duration),
        },
        "method": (
            "rate = rows / (last - first arrival); cv = sample std / mean of inter-arrival gaps, "
            "giving gamma gaps of shape 1/cv^2; lengths: maximum-likelihood lognormal "
            "(median = exp(mean log), sigma = std log), clipped to the observed max"
        ),
        "stream": synthetic_stream({"kind": "gamma", "rate": sig(rate), "cv": sig(cv)},
                                   prompt_fit, output_fit, max_prompt, max_output, duration),
        "fit_quality": {
            "inter_arrival_ks_statistic": sig(float(gap_ks), 3),
            "per_minute_count_cv": {
                "trace": sig(per_minute_cv(data["arrival"]), 3),
                "renewal_model": sig(cv / math.sqrt(rate * 60), 3),
            },
            "prompt_tokens": length_quality(data["prompt"], prompt_fit, max_prompt, rng),
            "output_tokens": length_quality(data["output"], output_fit, max_output, rng),
        },
    }


def shared_prefix_fractions(hashes: list[tuple[int, ...]]) -> np.ndarray:
    """Per request: leading blocks already seen in earlier requests ÷ its blocks."""
    seen: set[int] = set()
    fractions = []
    for blocks in hashes:
        shared = 0
        while shared < len(blocks) and blocks[shared] in seen:
            shared += 1
        fractions.append(shared / len(blocks))
        seen.update(blocks)
    return np.asarray(fractions)


def block_reuse_fraction(hashes: list[tuple[int, ...]]) -> float:
    """Fraction of all blocks whose id appeared in an earlier request."""
    seen: set[int] = set()
    reused = total = 0
    for blocks in hashes:
        reused += sum(block in seen for block in blocks)
        total += len(blocks)
        seen.update(blocks)
    return reused / total


def fit_mooncake(source: Path) -> dict:
    data = load(source, "mooncake")
    duration = float(data["arrival"][-1])
    rate = len(data["arrival"]) / duration
    prompt_fit, output_fit = fit_lognormal(data["prompt"]), fit_lognormal(data["output"])
    max_prompt, max_output = int(data["prompt"].max()), int(data["output"].max())
    fractions = np.clip(shared_prefix_fractions(data["hashes"]), 1e-3, 1 - 1e-3)
    beta_a, beta_b, _, _ = stats.beta.fit(fractions, floc=0, fscale=1)
    first_shared = float(np.mean([h[0] == data["hashes"][0][0] for h in data["hashes"]]))
    rng = np.random.default_rng(0)
    return {
        "source": {
            "file": source.name,
            "origin": "kvcache-ai/Mooncake FAST25-release/traces/conversation_trace.jsonl",
            "licence": "Apache-2.0",
            "sha256_16": sha256_16(source),
            "rows": len(data["arrival"]),
            "duration_s": sig(duration),
        },
        "method": (
            "rate = rows / (last - first arrival); the file's timestamps are quantised (most "
            "gaps are 0), so no gap CV is fitted and arrivals are Poisson; lengths: maximum-"
            "likelihood lognormal clipped to the observed max; prefix sharing: every request "
            "starts with one common block; its shared-prefix fraction (leading blocks seen "
            "before / blocks) is Beta(a, b) by maximum likelihood"
        ),
        "stream": synthetic_stream({"kind": "poisson", "rate": sig(rate)},
                                   prompt_fit, output_fit, max_prompt, max_output, duration),
        "prefix_model": {
            "block_tokens": MOONCAKE_BLOCK_TOKENS,
            "first_block_shared_fraction": sig(first_shared, 4),
            "shared_fraction_beta": {"a": sig(beta_a, 4), "b": sig(beta_b, 4)},
        },
        "fit_quality": {
            "prompt_tokens": length_quality(data["prompt"], prompt_fit, max_prompt, rng),
            "output_tokens": length_quality(data["output"], output_fit, max_output, rng),
            "shared_fraction_ks_statistic": sig(float(
                stats.kstest(fractions, "beta", args=(beta_a, beta_b)).statistic), 3),
            "block_reuse_fraction": {"trace": sig(block_reuse_fraction(data["hashes"]), 3)},
            "blocks_per_request_mean": {"trace": sig(float(np.mean([len(h) for h in data["hashes"]])), 4)},
        },
    }


def sample_requests(stream: dict, rows: int, seed: int) -> list:
    fitted = SyntheticStream.model_validate({**stream, "num_requests": rows, "duration_s": None})
    config = WorkloadConfig(streams=[fitted])
    return list(build_workload(config, np.random.SeedSequence(seed), REPO_ROOT))


def write_azure_sample(requests: list, path: Path) -> None:
    with open(path, "w", encoding="utf-8", newline="") as out:
        out.write("TIMESTAMP,ContextTokens,GeneratedTokens\n")
        for request in requests:
            stamp = SAMPLE_EPOCH + dt.timedelta(seconds=request.arrival)
            out.write(f"{stamp:%Y-%m-%d %H:%M:%S}.{stamp.microsecond:06d}0,"
                      f"{request.prompt_tokens},{request.output_tokens}\n")


def prefix_hashes(requests: list, model: dict, rng: np.random.Generator) -> list[list[int]]:
    """Block ids per request: the first k blocks copied from an earlier request, the rest new.

    k = round(f × blocks) with f ~ Beta(a, b), at least the common first block; the donor is a
    uniformly chosen earlier request with at least k blocks (else the longest earlier one).
    """
    beta = model["shared_fraction_beta"]
    next_id = 1  # block 0 is the common first block
    result: list[list[int]] = []
    for request in requests:
        count = max(1, math.ceil(request.prompt_tokens / model["block_tokens"]))
        shared = min(count, max(1, round(rng.beta(beta["a"], beta["b"]) * count)))
        donors = [h for h in result if len(h) >= shared]
        if result and not donors:
            donors = [max(result, key=len)]
        prefix = list(donors[int(rng.integers(len(donors)))][:shared]) if donors else [0]
        fresh = list(range(next_id, next_id + count - len(prefix)))
        next_id += len(fresh)
        result.append(prefix + fresh)
    return result


def write_mooncake_sample(requests: list, hashes: list[list[int]], path: Path) -> None:
    with open(path, "w", encoding="utf-8") as out:
        for request, blocks in zip(requests, hashes):
            record = {"timestamp": round(request.arrival * 1000), "input_length": request.prompt_tokens,
                      "output_length": request.output_tokens, "hash_ids": blocks}
            out.write(json.dumps(record) + "\n")


def write_yaml(data: dict, path: Path, title: str) -> None:
    header = (f"# {title}\n# Generated by traces/make_samples.py from the real trace named under "
              "`source`; do not edit by hand.\n# `stream` validates as a chironsim `synthetic` "
              "stream (chironsim.workload.config.SyntheticStream).\n")
    with open(path, "w", encoding="utf-8") as out:
        out.write(header)
        yaml.safe_dump(data, out, sort_keys=False, width=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source-dir", type=Path, default=REPO_ROOT.parent / "shared" / "traces")
    parser.add_argument("--out-dir", type=Path, default=HERE)
    args = parser.parse_args()

    azure = fit_azure(args.source_dir / "azure_llm_2023_conv.csv")
    azure_requests = sample_requests(azure["stream"], AZURE_SAMPLE_ROWS, AZURE_SEED)
    write_azure_sample(azure_requests, args.out_dir / "azure_conv_sample.csv")
    write_yaml(azure, args.out_dir / "azure_conv_fit.yaml",
               "Gamma arrivals + lognormal lengths fitted to the Azure LLM 2023 conversation trace")

    mooncake = fit_mooncake(args.source_dir / "mooncake_conversation_trace.jsonl")
    moon_requests = sample_requests(mooncake["stream"], MOONCAKE_SAMPLE_ROWS, MOONCAKE_SEED)
    hashes = prefix_hashes(moon_requests, mooncake["prefix_model"], np.random.default_rng(MOONCAKE_SEED))
    sample_reuse = block_reuse_fraction([tuple(h) for h in hashes])
    mooncake["fit_quality"]["block_reuse_fraction"]["sample"] = sig(sample_reuse, 3)
    mooncake["fit_quality"]["blocks_per_request_mean"]["sample"] = sig(float(np.mean([len(h) for h in hashes])), 4)
    write_mooncake_sample(moon_requests, hashes, args.out_dir / "mooncake_conv_sample.jsonl")
    write_yaml(mooncake, args.out_dir / "mooncake_conv_fit.yaml",
               "Poisson arrivals, lognormal lengths and a prefix-sharing model fitted to the "
               "Mooncake conversation trace")
    for name in ("azure_conv_sample.csv", "mooncake_conv_sample.jsonl"):
        size = (args.out_dir / name).stat().st_size
        print(f"{name}: {size / 1024:.0f} KiB")
    print(json.dumps({"azure": azure["fit_quality"], "mooncake": mooncake["fit_quality"]}, indent=1))


if __name__ == "__main__":
    main()
