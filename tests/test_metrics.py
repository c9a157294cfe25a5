"""Tables, summary and terminal formatting, checked on small hand-built records."""

from __future__ import annotations

import math
from dataclasses import fields

import numpy as np
import pandas as pd
import pytest

from chironsim.errors import ConfigError, UnknownNameError
from chironsim.metrics.format import format_duration, format_summary
from chironsim.metrics.records import InstanceRecord, RequestRecord
from chironsim.metrics.slo import RequestClassSpec, SLOSpec, slo_met
from chironsim.metrics.summary import SUMMARY_SCHEMA, summarize
from chironsim.metrics.tables import (
    events_table,
    instances_table,
    requests_table,
    timeseries_table,
)

NAN = float("nan")
CLASSES = {
    "interactive": RequestClassSpec(priority=0, slo=SLOSpec(ttft=1.0, tpot=0.1)),
    "batch": RequestClassSpec(priority=1, slo=SLOSpec(e2e=100.0)),
    "offline": RequestClassSpec(priority=2),
}
PRICES = {"h100": 4.0, "a100": 2.0}


def req(rid, cls, status, ttft=NAN, tpot=NAN, e2e=NAN, generated=0, output=10, arrival=0.0):
    """A request record whose ``slo_met`` comes from the class's SLO, as the simulator does it."""
    finished = status == "finished"
    met = slo_met(CLASSES[cls].slo if cls in CLASSES else SLOSpec(), finished, ttft, tpot, tpot,
                  e2e, arrival + e2e, NAN)
    return RequestRecord(
        request_id=rid, request_class=cls, arrival=arrival, prompt_tokens=100,
        output_tokens=output, generated_tokens=generated, status=status,
        first_token_time=arrival + ttft, finish_time=arrival + e2e, ttft=ttft, tpot=tpot,
        itl_max=tpot, e2e=e2e, deadline=NAN, preemptions=0, migrations=0, evictions=0,
        instances="" if status == "rejected" else "i0", slo_met=met,
    )


def inst(iid, gpu, gpu_seconds, num_gpus=1):
    return InstanceRecord(
        instance_id=iid, pool="mixed", gpu=gpu, model="llama-3-8b", tp=num_gpus,
        num_gpus=num_gpus, provision_time=0.0, ready_time=30.0, drain_time=NAN,
        stop_time=gpu_seconds / num_gpus, gpu_seconds=gpu_seconds, tokens_prefilled=0,
        tokens_generated=0, requests_finished=0, iterations=0, busy_seconds=0.0,
    )


INTERACTIVE_TTFT = [0.2, 0.5, 0.9, 1.5, 0.3, 0.4]
INTERACTIVE_TPOT = [0.05, 0.06, 0.2, 0.04, 0.05, NAN]  # last one is a one-token answer
INTERACTIVE_OUT = [10, 20, 30, 40, 50, 1]


def records():
    reqs = [
        req(i, "interactive", "finished", ttft=t, tpot=p, e2e=t + 2.0, generated=o, output=o)
        for i, (t, p, o) in enumerate(zip(INTERACTIVE_TTFT, INTERACTIVE_TPOT, INTERACTIVE_OUT))
    ]
    reqs.append(req(10, "interactive", "rejected"))
    reqs.append(req(11, "interactive", "unfinished", ttft=0.3, generated=3, output=50))
    reqs.append(req(20, "batch", "finished", ttft=5.0, tpot=0.3, e2e=60.0, generated=200,
                    output=200))
    reqs.append(req(21, "batch", "finished", ttft=9.0, tpot=0.5, e2e=150.0, generated=300,
                    output=300))
    insts = [inst("i0", "h100", 3600.0), inst("i1", "h100", 1800.0),
             inst("i2", "a100", 7200.0, num_gpus=2)]
    return reqs, insts


def build_summary(duration=100.0):
    reqs, insts = records()
    return summarize(requests_table(reqs), instances_table(insts), CLASSES, duration, PRICES)


# --- tables -----------------------------------------------------------------------------------

def test_requests_table_follows_record_fields_and_keeps_dtypes_when_empty():
    reqs, _ = records()
    full = requests_table(reqs)
    empty = requests_table([])
    assert list(full.columns) == [f.name for f in fields(RequestRecord)]
    assert list(empty.columns) == list(full.columns)
    assert len(full) == len(reqs) and len(empty) == 0
    for col in full.columns:
        assert full[col].dtype.kind == empty[col].dtype.kind or (
            isinstance(full[col].dtype, pd.CategoricalDtype)
            and isinstance(empty[col].dtype, pd.CategoricalDtype)
        ), col
    assert full["request_id"].dtype == np.int64
    assert full["slo_met"].dtype == bool
    assert list(full["status"].cat.categories) == ["finished", "rejected", "unfinished"]
    assert list(empty["status"].cat.categories) == ["finished", "rejected", "unfinished"]


def test_instances_table_columns():
    _, insts = records()
    table = instances_table(insts)
    assert list(table.columns) == [f.name for f in fields(InstanceRecord)]
    assert table["gpu_seconds"].sum() == 3600.0 + 1800.0 + 7200.0
    assert list(instances_table([]).columns) == list(table.columns)


def test_requests_table_rejects_unknown_status():
    bad = req(1, "interactive", "finished", ttft=0.1, tpot=0.01, e2e=1.0)
    bad = RequestRecord(**{**{f.name: getattr(bad, f.name) for f in fields(RequestRecord)},
                           "status": "lost"})
    with pytest.raises(ValueError, match="status"):
        requests_table([bad])


TS_ROW = dict(time=1.0, pool="mixed", provisioning=1, loading=0, ready=2, draining=0, waiting=5,
              running=7, kv_utilization=0.5, max_num_seqs=64.0, tokens_per_s=1200.0,
              fused_members=0)


def test_timeseries_table_schema_and_errors():
    table = timeseries_table([TS_ROW, {**TS_ROW, "time": 2.0, "ready": 3}])
    assert list(table.columns) == list(TS_ROW)
    assert table["ready"].tolist() == [2, 3] and table["ready"].dtype == np.int64
    assert list(timeseries_table([]).columns) == list(TS_ROW)
    with pytest.raises(ValueError, match="missing \\['tokens_per_s'\\]"):
        timeseries_table([{k: v for k, v in TS_ROW.items() if k != "tokens_per_s"}])
    with pytest.raises(ValueError, match="unexpected \\['extra'\\]"):
        timeseries_table([{**TS_ROW, "extra": 1}])


def test_events_table_schema():
    rows = [dict(time=3.0, kind="scale_up", pool="mixed", instance_id="i3", request_id=-1,
                 reason="queue above threshold", detail="n=3")]
    table = events_table(rows)
    assert list(table.columns) == ["time", "kind", "pool", "instance_id", "request_id", "reason",
                                   "detail"]
    assert table["request_id"].dtype == np.int64 and table.loc[0, "request_id"] == -1
    assert len(events_table([])) == 0


# --- summary ----------------------------------------------------------------------------------

def row(summary, name):
    return summary.set_index("request_class").loc[name]


def test_summary_rows_and_columns():
    summary = build_summary()
    assert list(summary.columns) == [name for name, _ in SUMMARY_SCHEMA]
    assert summary["request_class"].tolist() == ["interactive", "batch", "offline", "all"]


def test_attainment_counts_rejected_and_unfinished_as_misses():
    inter = row(build_summary(), "interactive")
    # met: ttft<=1 and tpot<=0.1 (NaN tpot holds trivially): ids 0,1,4,5; 2 misses tpot, 3 ttft
    assert (inter["requests"], inter["finished"], inter["rejected"], inter["unfinished"]) == (
        8, 6, 1, 1)
    assert inter["slo_met"] == 4
    assert inter["slo_attainment"] == pytest.approx(4 / 8)


def test_percentiles_and_means_match_numpy_over_finished_requests():
    inter = row(build_summary(), "interactive")
    ttft = np.array(INTERACTIVE_TTFT)  # the unfinished request's ttft (0.3) must not count
    tpot = np.array([p for p in INTERACTIVE_TPOT if not math.isnan(p)])
    for p in (50, 90, 99):
        assert inter[f"ttft_p{p}"] == pytest.approx(np.percentile(ttft, p))
        assert inter[f"tpot_p{p}"] == pytest.approx(np.percentile(tpot, p))
        assert inter[f"e2e_p{p}"] == pytest.approx(np.percentile(ttft + 2.0, p))
    assert inter["ttft_mean"] == pytest.approx(ttft.mean())
    assert inter["tpot_mean"] == pytest.approx(tpot.mean())


def test_throughput_and_token_rate():
    summary = build_summary(duration=50.0)
    inter, total = row(summary, "interactive"), row(summary, "all")
    assert inter["throughput_rps"] == pytest.approx(6 / 50.0)
    assert inter["output_tokens_per_s"] == pytest.approx((sum(INTERACTIVE_OUT) + 3) / 50.0)
    assert total["throughput_rps"] == pytest.approx(8 / 50.0)


def test_all_row_aggregates_every_class():
    summary = build_summary()
    total = row(summary, "all")
    per_class = summary[summary["request_class"] != "all"]
    for col in ("requests", "finished", "rejected", "unfinished", "slo_met"):
        assert total[col] == per_class[col].sum(), col
    assert total["slo_attainment"] == pytest.approx((4 + 1) / 10)
    all_ttft = INTERACTIVE_TTFT + [5.0, 9.0]
    assert total["ttft_p99"] == pytest.approx(np.percentile(all_ttft, 99))


def test_empty_class_has_zero_counts_and_nan_statistics():
    offline = row(build_summary(), "offline")
    assert offline["requests"] == 0 and offline["slo_met"] == 0
    assert math.isnan(offline["slo_attainment"])
    assert math.isnan(offline["ttft_p50"]) and math.isnan(offline["e2e_mean"])
    assert offline["throughput_rps"] == 0.0


def test_gpu_hours_cost_and_goodput_repeat_on_every_row():
    summary = build_summary()
    assert summary["gpu_hours"].tolist() == pytest.approx([3.5] * 4)
    assert summary["cost_usd"].tolist() == pytest.approx([1.0 * 4 + 0.5 * 4 + 2.0 * 2] * 4)
    good_tokens = 10 + 20 + 50 + 1 + 200  # SLO-meeting: interactive ids 0,1,4,5 and batch id 20
    assert summary["goodput_tokens_per_gpu_hour"].tolist() == pytest.approx(
        [good_tokens / 3.5] * 4)


def test_summary_of_an_empty_run():
    summary = summarize(requests_table([]), instances_table([]), CLASSES, 10.0, PRICES)
    assert summary["requests"].tolist() == [0, 0, 0, 0]
    assert summary["gpu_hours"].tolist() == [0.0] * 4
    assert summary["goodput_tokens_per_gpu_hour"].isna().all()


def test_class_only_in_data_gets_its_own_row():
    extra = [req(1, "research", "finished", ttft=0.1, tpot=0.01, e2e=1.0, generated=5)]
    summary = summarize(requests_table(extra), instances_table([]), CLASSES, 10.0, PRICES)
    assert summary["request_class"].tolist() == ["interactive", "batch", "offline", "research",
                                                 "all"]
    assert row(summary, "research")["requests"] == 1


def test_summary_errors_name_the_problem():
    reqs, insts = records()
    req_t, inst_t = requests_table(reqs), instances_table(insts)
    with pytest.raises(UnknownNameError, match="a100"):
        summarize(req_t, inst_t, CLASSES, 10.0, {"h100": 4.0})
    with pytest.raises(ConfigError, match="reserved"):
        summarize(req_t, inst_t, {"all": RequestClassSpec()}, 10.0, PRICES)
    with pytest.raises(ValueError, match="duration_s"):
        summarize(req_t, inst_t, CLASSES, 0.0, PRICES)


# --- format -----------------------------------------------------------------------------------

def test_format_duration_units():
    assert format_duration(0.0123) == "12.3 ms"
    assert format_duration(4.5) == "4.5 s"
    assert format_duration(900.0) == "15 min"
    assert format_duration(7200.0) == "2 h"
    assert format_duration(NAN) == "-"


def test_format_summary_lists_classes_and_cluster_line():
    text = format_summary(build_summary())
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["class", "requests", "SLO"]
    body = {line.split()[0]: line for line in lines[2:-1]}
    assert set(body) == {"interactive", "batch", "offline", "all"}
    assert "50.0%" in body["interactive"]
    assert "ms" in body["interactive"]  # TTFT p50 0.45 s renders in milliseconds
    assert "-" in body["offline"]
    assert len({len(line) for line in lines[:-1]}) == 1  # fixed width
    assert lines[-1] == "GPU-hours 3.5  cost $10.00  goodput/GPU-hour 80 tokens"  # 281 / 3.5


def test_a_timeseries_from_before_the_fused_column_reads_with_zeros():
    older = timeseries_table([{k: v for k, v in TS_ROW.items() if k != "fused_members"}])
    assert list(older.fused_members) == [0]
    assert list(older.columns)[-1] == "fused_members"
