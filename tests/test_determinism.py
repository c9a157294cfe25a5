"""Same config and seed, same tables, bit for bit (DESIGN.md §8, "Determinism").

Also when runs share a process (no global state leaks between simulations), and with the
decode fast-forward on or off (it must change speed, never results).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pandas.testing import assert_frame_equal

from chironsim.experiments.runner import run
from chironsim.metrics.tables import events_table, instances_table, requests_table, timeseries_table
from chironsim.perf.roofline import IterationTimeModel
from chironsim.sim import cluster as cluster_module
from scenarios import build_simulation, fast_forward_scenario, scenario, synthetic

TABLES = ("requests", "instances", "timeseries", "events", "summary")


def rich_scenario(seed: int) -> dict:
    """Bursty traffic, a reactive autoscaler, batching and a tight KV cache: most code paths."""
    stream = synthetic({"kind": "gamma", "rate": 8.0, "cv": 2.5},
                       {"kind": "lognormal", "median": 300, "sigma": 0.8},
                       {"kind": "lognormal", "median": 150, "sigma": 0.8},
                       duration_s=90.0, max_prompt_tokens=1500, max_output_tokens=800)
    cfg = scenario([stream], seed=seed, instances=1, duration_s=90.0, drain_s=60.0,
                   engine={"max_num_seqs": 32, "gpu_memory_utilization": 0.2},
                   policy={"kind": "reactive", "metric": "queue_length", "target": 4.0,
                           "interval_s": 5.0, "scale_down_stabilization_s": 15.0,
                           "cooldown_s": 5.0, "max_instances": 4},
                   sample_interval_s=1.0)
    cfg["cluster"]["lifecycle"] = {"provision_s": 3.0, "engine_startup_s": 1.0}
    return cfg


def assert_same_tables(a, b) -> None:
    for name in TABLES:
        assert_frame_equal(getattr(a, name), getattr(b, name), check_exact=True, obj=name)


@pytest.fixture(scope="module")
def interleaved():
    """Run A, then B (another seed), then A again, in one process."""
    first = run(rich_scenario(seed=1))
    other = run(rich_scenario(seed=2))
    again = run(rich_scenario(seed=1))
    return first, other, again


def test_scenario_is_rich_enough(interleaved):
    first, _, _ = interleaved
    kinds = set(first.events.kind)
    assert {"scale_up", "scale_down", "preempt"} <= kinds, f"events seen: {sorted(kinds)}"
    assert len(first.instances) > 1 and len(first.requests) > 300


def test_same_seed_same_tables_across_interleaved_runs(interleaved):
    first, _, again = interleaved
    assert_same_tables(first, again)
    assert first.manifest["seed"] == again.manifest["seed"] == 1
    assert first.manifest["config"] == again.manifest["config"]


def test_different_seed_different_tables(interleaved):
    first, other, _ = interleaved
    for name in ("requests", "timeseries", "summary"):
        with pytest.raises(AssertionError):
            assert_frame_equal(getattr(first, name), getattr(other, name), obj=name)
    assert not first.requests.arrival.equals(other.requests.arrival)


def raw_tables(sim) -> dict[str, pd.DataFrame]:
    return {
        "requests": requests_table(sim.request_records),
        "instances": instances_table(sim.cluster.instance_records),
        "timeseries": timeseries_table(sim.timeseries),
        "events": events_table(sim.events),
    }


def test_run_nested_inside_another_run_changes_neither(interleaved):
    """Run B from start to end while run A is suspended mid-way (at its 60-s progress call):
    both must equal their runs alone. Everything per-run (clock, ids, random streams, policy
    state) must belong to the Simulation object for this to hold."""
    nested = build_simulation(rich_scenario(seed=2))
    paused_at: list[float] = []

    def progress(now: float) -> None:
        if not paused_at:
            paused_at.append(now)
            nested.run()

    outer = build_simulation(rich_scenario(seed=1), progress=progress)
    outer.run()
    assert paused_at and 0 < paused_at[0] < 90, "run B must happen while run A is in progress"
    alone_outer, alone_nested, _ = interleaved  # the same seeds, each run on its own
    for mixed, alone in ((outer, alone_outer), (nested, alone_nested)):
        for name, table in raw_tables(mixed).items():
            assert_frame_equal(table, getattr(alone, name), check_exact=True, obj=name)


def counting_perf_model(calls: dict[str, int]):
    """An IterationTimeModel that counts calls pricing a stretch (array) vs one iteration."""

    class Counting(IterationTimeModel):
        def iteration_time(self, prefill_tokens, prefill_attention_work, decode_seqs, decode_context):
            key = "stretch" if isinstance(decode_context, np.ndarray) else "single"
            calls[key] = calls.get(key, 0) + 1
            return super().iteration_time(prefill_tokens, prefill_attention_work, decode_seqs,
                                          decode_context)

    return Counting


@pytest.fixture(scope="module")
def fast_forward_pair():
    """The same scenario with fast_forward on and off, counting how iterations were priced."""
    calls_on: dict[str, int] = {}
    calls_off: dict[str, int] = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cluster_module, "IterationTimeModel", counting_perf_model(calls_on))
        on = run(fast_forward_scenario(True))
        patch.setattr(cluster_module, "IterationTimeModel", counting_perf_model(calls_off))
        off = run(fast_forward_scenario(False))
    return on, off, calls_on, calls_off


def test_fast_forward_changes_nothing(fast_forward_pair):
    on, off, calls_on, calls_off = fast_forward_pair
    # The knob took effect: stretches were priced with it on and never with it off.
    assert calls_on.get("stretch", 0) > 100 and "stretch" not in calls_off
    assert (on.events.kind == "preempt").sum() > 20, "the scenario must exercise preemption"
    assert_frame_equal(on.requests, off.requests, check_exact=True, obj="requests")
    assert_frame_equal(on.events, off.events, check_exact=True, obj="events")
    assert_frame_equal(on.instances, off.instances, check_exact=True, obj="instances")
    # Per-token ITL histograms (summary itl_*), ttft_p999 and queue_s/queue_p*: a stretch
    # records every gap of its iterations in bulk, exactly as stepping records them one by one.
    assert_frame_equal(on.summary, off.summary, check_exact=True, obj="summary")
    assert on.manifest["itl_histograms"] == off.manifest["itl_histograms"]
    assert on.summary.itl_p99.notna().all() and on.requests.queue_s.notna().any()


def test_fast_forward_busy_seconds_bit_identical(fast_forward_pair):
    on, off, _, _ = fast_forward_pair
    difference = (on.instances.busy_seconds - off.instances.busy_seconds).abs().max()
    assert difference == 0.0, f"busy_seconds differs by up to {difference:.3g} s"
