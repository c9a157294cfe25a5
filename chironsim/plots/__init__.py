"""Figures from result tables: functions take a DataFrame and an Axes and return the Axes."""

from chironsim.plots.figures import (
    instances_over_time,
    kv_utilization_over_time,
    latency_cdf,
    no_data,
    queue_over_time,
)
from chironsim.plots.standard import write_standard_plots
from chironsim.plots.sweep_figures import (
    attainment_vs_load,
    gpu_hours_vs_load,
    instances_by_group,
    latency_cdf_by_group,
    metric_vs_load,
    write_sweep_plots,
)

__all__ = [
    "attainment_vs_load",
    "gpu_hours_vs_load",
    "instances_by_group",
    "instances_over_time",
    "kv_utilization_over_time",
    "latency_cdf",
    "latency_cdf_by_group",
    "metric_vs_load",
    "no_data",
    "queue_over_time",
    "write_standard_plots",
    "write_sweep_plots",
]
