"""``policy: {kind: kunserve, ...}``: every parameter of KunServe's decision logic.

The specification is ``reference/README.md`` (KunServe) as corrected by issue 10, with the
evidence in ``reference/llumnix_kunserve.md`` part B; each field says where its default comes
from, and a default the sources do not give is marked as a reconstruction.

Registered in ``chironsim/policies/registry.py`` (built by :mod:`.policy`). The mechanism's own
costs (stage times, hops, exchange and restore durations) are ``chironsim.perf.pipeline``,
``chironsim.perf.drop`` and ``chironsim.perf.exchange``, not settings here.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from chironsim.config_base import ConfigModel, PolicyInterval, PositiveSeconds, limited
from chironsim.limits import MAX_GROUP_SIZE, MAX_NUM_SEQS, MAX_WINDOW_SAMPLES

GroupSize = limited(int, MAX_GROUP_SIZE, "instances", ge=2)
#: usage is demanded ÷ capacity blocks: above 1 under overload, so a threshold may exceed 1
Usage = limited(float, 10.0, "x capacity", gt=0)
Requests = limited(int, MAX_NUM_SEQS, "requests", ge=1)


class KunServePolicyConfig(ConfigModel):
    """KunServe (Cheng et al., arXiv 2412.18169; EuroSys 2026): groups of instances that, under
    KV-memory overload, drop their replicated layers and serve as one pipeline; restore when the
    load falls."""

    kind: Literal["kunserve"] = "kunserve"

    # --- groups -----------------------------------------------------------------------------
    group_size: GroupSize = Field(
        2, description="instances per group, g (reference README: default 2; the released code's "
        "--group-size, B.1)")
    drop_plan: Literal["static", "greedy"] = Field(
        "static", description="'static': fixed groups of group_size, the whole group drops when "
        "enough members vote (the released code, B.1). 'greedy': a RECONSTRUCTION of the paper's "
        "unpublished drop-plan algorithm (chironsim.policies.kunserve.plan.greedy_drop_plan): "
        "each voting instance, neediest first, fuses with the fewest least-used independent "
        "partners whose dropped weights cover its queued demand; group_size is then the "
        "largest group it may form")

    # --- triggers ---------------------------------------------------------------------------
    usage_sample_interval: PolicyInterval = Field(
        0.5, description="seconds between usage samples per instance (released code, B.2)")
    usage_window: PositiveSeconds = Field(
        15.0, description="seconds of usage samples kept to judge whether usage is falling "
        "(released code: 30 samples = 15 s, B.2)")
    drop_check_interval: PolicyInterval = Field(
        0.1, description="seconds between drop/restore checks (released code's coordinator, B.2)")
    drop_usage: Usage = Field(
        0.95, description="usage (demanded ÷ capacity) at or above which a member votes to drop, "
        "together with queued demand >= free blocks (released code: 95 %, B.2)")
    trigger_scope: Literal["per_group", "all_groups"] = Field(
        "per_group", description="'per_group': each group decides on its own members (the "
        "paper's 'no unnecessary cooperation'); 'all_groups': one group's trigger drops every "
        "group (the released code, reference README)")
    restore: bool = Field(True, description="restore fused groups when the load falls (released "
                          "code's enable_restore, B.2)")
    restore_usage: Usage = Field(
        0.5, description="usage at or below which a fused group with no queue and falling usage "
        "restores (released code's restore_memory_threshold, B.2)")

    # --- stale requests and conversion -----------------------------------------------------
    stale_requests: Literal["live_exchange", "blocking_exchange", "recompute"] = Field(
        "live_exchange", description="requests running when the group forms: 'live_exchange' "
        "KV exchange overlapped with pipeline steps (the code's livereshard, the paper's design); "
        "'blocking_exchange' (reshard); 'recompute' (re-prefill) (B.1 step 4)")
    exchange_batch_size: Requests = Field(
        8, description="stale requests exchanged per pipeline step (released code, B.2)")
    restore_batch_size: Requests = Field(
        8, description="pipelined requests converted back per step while restoring (released "
        "code, B.2)")

    @model_validator(mode="after")
    def _consistent(self) -> KunServePolicyConfig:
        if self.restore_usage >= self.drop_usage:
            raise ValueError(f"restore_usage ({self.restore_usage}) must be below drop_usage "
                             f"({self.drop_usage}), or a group could restore and drop at once")
        if self.usage_window < self.usage_sample_interval:
            raise ValueError(f"usage_window ({self.usage_window} s) must hold at least one sample "
                             f"(usage_sample_interval {self.usage_sample_interval} s)")
        if self.drop_plan == "greedy" and self.trigger_scope == "all_groups":
            raise ValueError("trigger_scope 'all_groups' is the released code's rule for static "
                             "groups; the greedy drop plan forms its groups from the voters alone")
        if self.window_samples > MAX_WINDOW_SAMPLES:
            raise ValueError(f"usage_window / usage_sample_interval must be at most "
                             f"{MAX_WINDOW_SAMPLES:,} samples (got {self.window_samples:,})")
        return self

    @property
    def window_samples(self) -> int:
        """Samples a usage window keeps (15 s / 0.5 s = 30, the code's window)."""
        return max(1, round(self.usage_window / self.usage_sample_interval))

    @property
    def min_votes(self) -> int:
        """Members that must vote for a group of g to drop: ⌊g/2⌋, at least 1 (B.2)."""
        return max(1, self.group_size // 2)

    def tick_intervals(self) -> dict[str, float]:
        """Controller periods by config key, for the scenario's bound on ticks per run."""
        return {"usage_sample_interval": self.usage_sample_interval,
                "drop_check_interval": self.drop_check_interval}
