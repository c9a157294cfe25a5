"""Standard plots: drawn on given Axes, written as non-empty PNGs, and 'no data' when empty."""

from __future__ import annotations

import pytest
from matplotlib.figure import Figure

from chironsim.experiments.result import Result
from chironsim.metrics.records import RequestRecord
from chironsim.metrics.slo import RequestClassSpec
from chironsim.plots import (
    instances_over_time,
    kv_utilization_over_time,
    latency_cdf,
    queue_over_time,
    write_standard_plots,
)

NAN = float("nan")
CLASSES = {"interactive": RequestClassSpec(), "batch": RequestClassSpec()}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _request(rid, cls, status, ttft):
    done = status == "finished"
    return RequestRecord(
        request_id=rid, request_class=cls, arrival=float(rid), prompt_tokens=10,
        output_tokens=5, generated_tokens=5 if done else 0, status=status,
        first_token_time=rid + ttft, finish_time=rid + 4 * ttft, ttft=ttft,
        tpot=ttft / 2, itl_max=ttft, e2e=4 * ttft, deadline=NAN, preemptions=0,
        migrations=0, evictions=0, instances="i0", slo_met=done,
    )


def _timeseries_row(t, pool, ready):
    return dict(time=float(t), pool=pool, provisioning=0, loading=0, ready=ready, draining=0,
                waiting=t % 3, running=ready * 2, kv_utilization=0.1 * t, max_num_seqs=64.0,
                tokens_per_s=100.0 * t)


def sample_result() -> Result:
    reqs = [_request(i, ("interactive", "batch")[i % 2], "finished", 0.1 * (i + 1))
            for i in range(10)]
    reqs.append(_request(10, "interactive", "rejected", NAN))
    ts = [_timeseries_row(t, p, 1 + t // 2) for t in range(6) for p in ("mixed", "batch")]
    return Result.from_records(reqs, [], ts, [], classes=CLASSES, duration_s=20.0,
                               price_per_gpu_hour={})


def empty_result() -> Result:
    return Result.from_records([], [], [], [], classes=CLASSES, duration_s=1.0,
                               price_per_gpu_hour={})


def axes():
    return Figure().add_subplot()


def texts(ax):
    return [t.get_text() for t in ax.texts]


def test_latency_cdf_draws_one_line_per_class_and_returns_the_axes():
    result = sample_result()
    ax = axes()
    assert latency_cdf(result.requests, ax, metric="e2e") is ax
    labels = sorted(line.get_label() for line in ax.get_lines())
    assert labels == ["batch (n=5)", "interactive (n=5)"]  # the rejected request is left out
    ys = ax.get_lines()[0].get_ydata()
    assert ys[-1] == pytest.approx(1.0) and list(ys) == sorted(ys)


def test_latency_cdf_rejects_unknown_metric():
    with pytest.raises(ValueError, match="latency"):
        latency_cdf(sample_result().requests, axes(), metric="latency")


def test_pool_plots_draw_each_pool_and_a_total():
    result = sample_result()
    for plot in (instances_over_time, queue_over_time):
        ax = axes()
        assert plot(result.timeseries, ax) is ax
        assert sorted(line.get_label() for line in ax.get_lines()) == ["batch", "mixed", "total"]
    ax = kv_utilization_over_time(result.timeseries, axes())
    assert sorted(line.get_label() for line in ax.get_lines()) == ["batch", "mixed"]


def test_empty_tables_say_no_data():
    result = empty_result()
    assert texts(latency_cdf(result.requests, axes())) == ["no data"]
    assert texts(instances_over_time(result.timeseries, axes())) == ["no data"]
    assert texts(queue_over_time(result.timeseries, axes())) == ["no data"]
    assert texts(kv_utilization_over_time(result.timeseries, axes())) == ["no data"]


@pytest.mark.parametrize("make", [sample_result, empty_result])
def test_write_standard_plots_writes_non_empty_pngs(tmp_path, make):
    paths = write_standard_plots(make(), tmp_path / "plots")
    assert [p.name for p in paths] == [
        "latency_cdf_ttft.png", "latency_cdf_tpot.png", "latency_cdf_e2e.png",
        "instances.png", "queue.png", "kv_utilization.png",
    ]
    for path in paths:
        data = path.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 2000, path.name
