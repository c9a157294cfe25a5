"""Merging streams: order, ties, classes, horizon, seeds, batch jobs and trace transformations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from chironsim.limits import MAX_TIME_S
from chironsim.workload import RequestSpec, WorkloadConfig, build_workload

FIXED = {"kind": "fixed", "value": 10}


def synthetic(rate: float = 5.0, cls: str = "interactive", **extra: object) -> dict:
    return {"kind": "synthetic", "arrival": {"kind": "poisson", "rate": rate}, "request_class": cls,
            "prompt_tokens": {"kind": "lognormal", "median": 100, "sigma": 1},
            "output_tokens": {"kind": "exponential", "mean": 50}, "duration_s": 200.0, **extra}


def batch(**extra: object) -> dict:
    return {"kind": "batch", "num_requests": 100, "submit_at": 50.0, "deadline_s": 600.0,
            "prompt_tokens": FIXED, "output_tokens": FIXED, **extra}


def run(streams: list[dict], seed: int = 11, base: Path = Path("."), horizon: float | None = None):
    config = WorkloadConfig.model_validate({"streams": streams})
    return list(build_workload(config, np.random.SeedSequence(seed), base, horizon))


def test_streams_merge_in_arrival_order_with_their_classes() -> None:
    requests = run([synthetic(cls="interactive"), synthetic(rate=1.0, cls="mixed"), batch()])
    assert all(a.arrival <= b.arrival for a, b in zip(requests, requests[1:]))
    classes = {r.request_class for r in requests}
    assert classes == {"interactive", "mixed", "batch"}
    assert sum(r.request_class == "batch" for r in requests) == 100


def test_ties_go_to_the_earlier_stream() -> None:
    first, second = batch(request_class="first"), batch(request_class="second")
    requests = run([first, second])
    assert [r.request_class for r in requests] == ["first"] * 100 + ["second"] * 100
    requests = run([second, first])
    assert [r.request_class for r in requests] == ["second"] * 100 + ["first"] * 100


def test_batch_job_deadlines_and_spread() -> None:
    at_once = run([batch()])
    assert {r.arrival for r in at_once} == {50.0}
    assert {r.deadline for r in at_once} == {650.0}
    spread = run([batch(window_s=20.0)])
    assert [r.arrival for r in spread] == pytest.approx([50.0 + 0.2 * i for i in range(100)])
    assert {r.deadline for r in spread} == {650.0}  # the job's deadline, for every request


def test_relative_deadlines_of_synthetic_streams() -> None:
    requests = run([synthetic(deadline=30.0)])
    assert all(r.deadline == pytest.approx(r.arrival + 30.0) for r in requests)
    assert all(r.deadline is None for r in run([synthetic()]))


def test_horizon_stops_even_an_endless_stream() -> None:
    # a year (the longest duration_s allowed) is endless next to a 100 s horizon
    requests = run([synthetic(duration_s=MAX_TIME_S)], horizon=100.0)
    assert requests and requests[-1].arrival < 100.0
    assert len(requests) == pytest.approx(500, abs=5 * 500**0.5)


def test_same_seed_same_workload_different_seed_different() -> None:
    streams = [synthetic(), synthetic(rate=2.0, cls="b"), batch()]
    assert run(streams, seed=3) == run(streams, seed=3)
    assert run(streams, seed=3) != run(streams, seed=4)


def test_the_seed_sequence_is_not_consumed() -> None:
    config = WorkloadConfig.model_validate({"streams": [synthetic()]})
    seed = np.random.SeedSequence(99)
    once = list(build_workload(config, seed, Path(".")))
    twice = list(build_workload(config, seed, Path(".")))
    assert once == twice and seed.n_children_spawned == 0


def test_appending_a_stream_leaves_earlier_streams_alone() -> None:
    alone = run([synthetic()])
    together = run([synthetic(), synthetic(rate=9.0, cls="other"), batch()])
    assert [r for r in together if r.request_class == "interactive"] == alone


def test_changing_lengths_does_not_move_arrivals() -> None:
    base = run([synthetic()])
    other = run([synthetic(prompt_tokens={"kind": "uniform", "min": 1, "max": 9})])
    assert [r.arrival for r in base] == [r.arrival for r in other]
    assert [r.output_tokens for r in base] == [r.output_tokens for r in other]
    # and lengths do not depend on the arrival process
    bursty = run([synthetic(arrival={"kind": "gamma", "rate": 5.0, "cv": 4.0})])
    n = min(len(base), len(bursty))
    assert [r.prompt_tokens for r in base[:n]] == [r.prompt_tokens for r in bursty[:n]]


def trace(tmp_path: Path) -> Path:
    # arrivals at 100, 101, ..., 199 s of trace time; prompt = index, output = 1000 + index
    path = tmp_path / "t.csv"
    path.write_text("arrived_at,num_prefill_tokens,num_decode_tokens\n"
                    + "".join(f"{100 + i},{i},{1000 + i}\n" for i in range(100)))
    return path


def replay(tmp_path: Path, **options: object) -> list[RequestSpec]:
    trace(tmp_path)
    return run([{"kind": "trace", "format": "splitwise", "path": "t.csv", **options}], base=tmp_path)


def test_trace_is_rebased_to_its_first_arrival(tmp_path: Path) -> None:
    requests = replay(tmp_path, request_class="interactive")
    assert requests[0] == RequestSpec(0.0, 1, 1000, "interactive")  # prompt 0 raised to 1
    assert requests[-1].arrival == 99.0


def test_time_window_rate_scale_and_start(tmp_path: Path) -> None:
    requests = replay(tmp_path, time_window=[10, 30], rate_scale=2.0, start=1000.0)
    assert [r.prompt_tokens for r in requests] == list(range(10, 30))
    assert [r.arrival for r in requests] == pytest.approx([1000.0 + i / 2 for i in range(20)])
    faster = replay(tmp_path, rate_scale=4.0)
    assert faster[-1].arrival == pytest.approx(99.0 / 4)


def test_limit_clipping_and_deadline(tmp_path: Path) -> None:
    config = WorkloadConfig.model_validate({"streams": [{
        "kind": "trace", "format": "splitwise", "path": "t.csv", "limit": 30,
        "max_prompt_tokens": 20, "max_output_tokens": 1010, "deadline": 5.0}]})
    trace(tmp_path)
    workload = build_workload(config, np.random.SeedSequence(0), tmp_path)
    requests = list(workload)
    assert len(requests) == 30
    assert [r.prompt_tokens for r in requests] == [1, *range(1, 21), *[20] * 9]
    assert max(r.output_tokens for r in requests) == 1010
    assert all(r.deadline == r.arrival + 5.0 for r in requests)
    stats = workload.stats[0]
    assert (stats.emitted, stats.prompt_clipped, stats.output_clipped) == (30, 10, 19)


def test_window_counts_rows_before_it(tmp_path: Path) -> None:
    trace(tmp_path)
    config = WorkloadConfig.model_validate({"streams": [
        {"kind": "trace", "format": "splitwise", "path": "t.csv", "time_window": [90, 500]}]})
    workload = build_workload(config, np.random.SeedSequence(0), tmp_path)
    assert len(list(workload)) == 10 and workload.stats[0].before_window == 90


def test_trace_and_synthetic_streams_mix(tmp_path: Path) -> None:
    trace(tmp_path)
    requests = run([{"kind": "trace", "format": "splitwise", "path": "t.csv", "request_class": "replay"},
                    synthetic(rate=1.0, cls="extra", duration_s=100.0)], base=tmp_path)
    assert sum(r.request_class == "replay" for r in requests) == 100
    assert all(a.arrival <= b.arrival for a, b in zip(requests, requests[1:]))


def test_closing_early_stops_the_workload(tmp_path: Path) -> None:
    trace(tmp_path)
    config = WorkloadConfig.model_validate({"streams": [
        {"kind": "trace", "format": "splitwise", "path": "t.csv"}]})
    workload = build_workload(config, np.random.SeedSequence(0), tmp_path)
    next(workload)
    workload.close()
    assert list(workload) == []
