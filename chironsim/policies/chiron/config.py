"""``policy: {kind: chiron, ...}``: every constant of Chiron's hierarchical autoscaler.

The specification is ``reference/README.md`` (section Chiron) with the evidence in
``reference/chiron.md``. The paper publishes almost none of its constants; each field below
says where its default comes from, and "reconstruction" marks the ones that are ours.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Literal

from pydantic import Field, field_validator, model_validator

from chironsim.config_base import (
    ConfigModel,
    InstanceCount,
    PolicyInterval,
    PositiveInstanceCount,
    Seconds,
    limited,
)
from chironsim.limits import MAX_NUM_SEQS

# Bounded number types (chironsim.limits says why each bound is what it is).
BatchLimit = limited(int, MAX_NUM_SEQS, "sequences", ge=1)


def _default_itl_slo() -> dict[str, float]:
    return {"interactive": 0.05, "batch": 0.5}


class ChironPolicyConfig(ConfigModel):
    """Chiron (Patke et al., arXiv 2501.08090): local batch-size backpressure per instance,
    global interactive scaling with over-provisioned mixed instances, batch scaling from a
    queue-waiting-time bound, preference routing with overflow to mixed instances.

    The three ablation switches (``local``, ``global_scaling``, ``mixed``) remove one piece
    each, as the paper's ablation does.
    """

    kind: Literal["chiron"] = "chiron"

    # --- names ----------------------------------------------------------------------------
    interactive_pool: str = Field("interactive", min_length=1,
                                  description="pool of interactive-only instances")
    mixed_pool: str = Field("mixed", min_length=1,
                            description="pool of preemptible instances serving both classes")
    batch_pool: str = Field("batch", min_length=1, description="pool of batch-only instances")
    interactive_class: str = Field("interactive", min_length=1,
                                   description="the latency-critical request class")
    batch_class: str = Field("batch", min_length=1,
                             description="the deadline class held in the global EDF queue")

    # --- ablations ------------------------------------------------------------------------
    local: bool = Field(True, description="run the per-instance batch-size autoscaler")
    global_scaling: bool = Field(True, description="run the global instance-count autoscaler")
    mixed: bool = Field(True, description="use the mixed pool; off keeps it at 0 instances and "
                        "interactive overflow then goes to the least-loaded interactive instance")

    # --- routing --------------------------------------------------------------------------
    overflow_kv_threshold: float = Field(
        0.7, gt=0, le=1, allow_inf_nan=False,
        description="an interactive instance at or above this KV utilisation has no capacity "
        "(spec default; SageServe's re-implementation uses the same 0.7)")

    # --- local autoscaler -----------------------------------------------------------------
    local_interval: PolicyInterval = Field(1.0,
                                  description="seconds between local ticks (reconstruction)")
    alpha: float = Field(0.3, gt=0, le=1, allow_inf_nan=False,
                         description="EWMA weight of the newest ITL sample (reconstruction)")
    epsilon: float = Field(0.05, ge=0, allow_inf_nan=False,
                           description="relative throughput gain that justifies doubling the "
                           "batch limit again (reconstruction)")
    probe_holdoff_s: Seconds = Field(10.0,
                                   description="after an ITL-driven halving, seconds before the "
                                   "limit may be probed upward again (reconstruction)")
    b_min: BatchLimit = Field(1, description="smallest max_num_seqs (reconstruction)")
    b_max_batch: BatchLimit = Field(4096, description="largest max_num_seqs on batch-pool "
                             "instances (secondary sources: batch sizes reach 2048-4096)")
    b_max_other: BatchLimit = Field(512, description="largest max_num_seqs on interactive and "
                             "mixed instances (reconstruction)")
    b_start: BatchLimit | None = Field(None, description="max_num_seqs set when an instance is "
                                "first seen ready; None keeps the engine's configured value")
    itl_signal: Literal["all", "pure_decode"] = Field(
        "all",
        description="which iterations the ITL EWMA averages: 'all' iterations that advanced a "
        "decode (the ITL requests see, prefill-chunk stalls included), or 'pure_decode', only "
        "those without a prefill chunk or KV transfer (the part a batch-size change controls). "
        "The paper does not say (reconstruction)")
    itl_slo: dict[str, float] = Field(
        default_factory=_default_itl_slo,
        description="mean inter-token latency target per class (s) for the local autoscaler; "
        "an instance follows the strictest class it is running. Defaults are reconstructions "
        "(interactive: tens of ms; batch: relaxed); set them equal to the scenario's class "
        "SLOs. Classes not listed impose no ITL target")

    # --- global autoscaler: interactive side ----------------------------------------------
    global_interval: PolicyInterval = Field(5.0,
                                   description="seconds between global ticks (spec default)")
    ibp_high: float = Field(0.6, ge=0, le=1, allow_inf_nan=False,
                            description="interactive backpressure above which an interactive "
                            "instance is added (spec; SageServe uses 0.6)")
    ibp_low: float = Field(0.3, ge=0, le=1, allow_inf_nan=False,
                           description="interactive backpressure below which, held for "
                           "scale_down_delay, an interactive instance is removed (spec default)")
    scale_down_delay: Seconds = Field(60.0,
                                    description="hysteresis before each interactive scale-down "
                                    "(s, spec default)")
    near_limit_fraction: float = Field(
        0.9, gt=0, le=1, allow_inf_nan=False,
        description="an instance is 'at or near its batch limit' when its running interactive "
        "requests reach this fraction of max_num_seqs (reconstruction)")
    itl_backpressure: bool = Field(
        False,
        description="also count as pressed an instance running interactive work whose mean "
        "ITL over the last global interval exceeds the interactive ITL target: SLO "
        "backpressure reaches the global level even while the local autoscaler's cut limit "
        "is not yet full (the abstract: backpressure from 'queue size, utilization, and "
        "SLOs'; reconstruction)")
    mixed_fraction: float = Field(0.25, ge=0, allow_inf_nan=False,
                                  description="mixed instances per interactive instance, at "
                                  "least one (spec default)")
    min_interactive: InstanceCount = Field(1, description="fewest interactive instances")
    max_interactive_instances: PositiveInstanceCount = Field(50, description="most interactive instances "
                                           "(the evaluation used up to 50 GPUs; reconstruction)")
    max_mixed_instances: PositiveInstanceCount = Field(50, description="most mixed instances "
                                     "(reconstruction, as above)")
    max_batch_instances: PositiveInstanceCount = Field(50, description="most batch instances "
                                     "(reconstruction, as above)")

    # --- global autoscaler: batch side ----------------------------------------------------
    z: float = Field(1.64, ge=0, allow_inf_nan=False,
                     description="standard normal quantile of the waiting-time bound "
                     "(one-sided 95 %; reconstruction)")
    cold_start_s: Seconds = Field(60.0,
                                description="time a new batch instance needs before it serves "
                                "(reconstruction; set it from the scenario's lifecycle)")
    batch_instance_throughput_tokens_s: float = Field(
        700.0, gt=0, allow_inf_nan=False,
        description="output tokens/s assumed for a batch-capable instance with no measurement "
        "yet (QLM's config.yaml value for Llama-3.1-8B; set it from the perf model)")

    @field_validator("itl_slo")
    @classmethod
    def _positive_targets(cls, slo: dict[str, float]) -> dict[str, float]:
        for name, seconds in slo.items():
            if not (seconds > 0 and seconds != float("inf")):
                raise ValueError(f"itl_slo[{name!r}] must be a positive finite number of "
                                 f"seconds, got {seconds}")
        return slo

    @model_validator(mode="after")
    def _consistent(self) -> ChironPolicyConfig:
        pools = (self.interactive_pool, self.mixed_pool, self.batch_pool)
        if len(set(pools)) != 3:
            raise ValueError(f"interactive_pool, mixed_pool and batch_pool must differ: {pools}")
        if self.interactive_class == self.batch_class:
            raise ValueError("interactive_class and batch_class must differ")
        for cls_name in (self.interactive_class, self.batch_class):
            if cls_name not in self.itl_slo:
                raise ValueError(f"itl_slo has no target for class {cls_name!r} "
                                 f"(it has {sorted(self.itl_slo)})")
        if self.ibp_low >= self.ibp_high:
            raise ValueError(f"ibp_low ({self.ibp_low}) must be below ibp_high ({self.ibp_high})")
        for name in ("b_max_batch", "b_max_other"):
            if getattr(self, name) < self.b_min:
                raise ValueError(f"{name} ({getattr(self, name)}) must be at least "
                                 f"b_min ({self.b_min})")
        if self.b_start is not None and self.b_start < self.b_min:
            raise ValueError(f"b_start ({self.b_start}) must be at least b_min ({self.b_min})")
        if self.min_interactive > self.max_interactive_instances:
            raise ValueError(f"min_interactive ({self.min_interactive}) must not exceed "
                             f"max_interactive_instances ({self.max_interactive_instances})")
        return self

    def references(self) -> list[tuple[tuple[str | int, ...], str, str]]:
        """Pool and class names this config uses, as (key path under ``policy``, "pool" or
        "class", name): a typo is a config error before the run, not a failure at the
        first global tick. The mixed pool is needed only while it is used."""
        refs: list[tuple[tuple[str | int, ...], str, str]] = [
            (("interactive_pool",), "pool", self.interactive_pool),
            (("batch_pool",), "pool", self.batch_pool),
            (("interactive_class",), "class", self.interactive_class),
            (("batch_class",), "class", self.batch_class),
        ]
        if self.mixed:
            refs.insert(1, (("mixed_pool",), "pool", self.mixed_pool))
        return refs

    def tick_intervals(self) -> dict[str, float]:
        """Controller periods by config key: the scenario bounds the ticks a run makes."""
        ticks = {}
        if self.local:
            ticks["local_interval"] = self.local_interval
        if self.global_scaling:
            ticks["global_interval"] = self.global_interval
        return ticks

    def growable_pools(self, pools: Collection[str]) -> set[str]:
        """Pools the global autoscaler sizes (the mixed one only while it is used); none
        without global scaling, where every pool keeps its starting size."""
        if not self.global_scaling:
            return set()
        mine = {self.interactive_pool, self.batch_pool} | ({self.mixed_pool} if self.mixed else set())
        return mine & set(pools)

    def b_max(self, pool: str) -> int:
        """The batch-size ceiling of an instance of ``pool``."""
        return self.b_max_batch if pool == self.batch_pool else self.b_max_other

    def own_pool(self, request_class: str) -> str:
        """The pool a class prefers: its configured pool, else the pool named like it."""
        if request_class == self.interactive_class:
            return self.interactive_pool
        if request_class == self.batch_class:
            return self.batch_pool
        return request_class
