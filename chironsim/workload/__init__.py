"""Workloads: request specs from trace files and synthetic generators, merged lazily by arrival."""

from chironsim.workload.build import Workload, build_workload, check_workload_files
from chironsim.workload.config import (
    BatchStream,
    SyntheticStream,
    TraceColumns,
    TraceStream,
    WorkloadConfig,
)
from chironsim.workload.spec import RequestSpec
from chironsim.workload.streams import StreamStats

__all__ = [
    "BatchStream",
    "RequestSpec",
    "StreamStats",
    "SyntheticStream",
    "TraceColumns",
    "TraceStream",
    "Workload",
    "WorkloadConfig",
    "build_workload",
    "check_workload_files",
]
