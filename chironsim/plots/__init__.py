"""Figures from result tables: functions take a DataFrame and an Axes and return the Axes."""

from chironsim.plots.figures import (
    instances_over_time,
    kv_utilization_over_time,
    latency_cdf,
    no_data,
    queue_over_time,
)
from chironsim.plots.standard import write_standard_plots

__all__ = [
    "instances_over_time",
    "kv_utilization_over_time",
    "latency_cdf",
    "no_data",
    "queue_over_time",
    "write_standard_plots",
]
