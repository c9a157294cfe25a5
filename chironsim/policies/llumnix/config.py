"""``policy: {kind: llumnix, ...}``: every parameter of Llumnix's decision logic.

The specification is ``reference/README.md`` (section Llumnix) with the evidence in
``reference/llumnix_kunserve.md`` part A; each field says where its default comes from. The
baselines of the paper are settings of this one model: INFaaS++ is ``dispatch: infaas,
migration: false, priority_agnostic: true``; Llumnix-base is ``priority_agnostic: true``;
round-robin is ``dispatch: round_robin, migration: false``.

Registered as ``policy: {kind: llumnix}`` (:mod:`.policy` builds it). The live-migration
mechanism's own settings (mode, stages, ``last_stage_max_blocks``, bandwidth, how many moves an
instance takes at a time) are the cluster's ``migration`` block, not here; ``max_migrations_*``
below is what the pairing asks for, at most what the mechanism runs (``cluster.migration.
max_out`` / ``max_in``; more is a config error, see :meth:`LlumnixPolicyConfig.cluster_bounds`). ``priority_agnostic: true`` also makes every engine
priority-agnostic (``engine.priority_scheduling`` off: FCFS admission, the latest arrival
preempted first): the policy declares it (:meth:`LlumnixPolicyConfig.engine_needs`) and the
cluster builds its engines so; an explicit ``engine.priority_scheduling: true`` beside it is
a config error naming both keys.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from types import MappingProxyType
from typing import Literal

from pydantic import Field, model_validator

from chironsim.config_base import ConfigModel, PolicyInterval, limited
from chironsim.limits import MAX_NUM_SEQS, MAX_PERIODIC_EVENTS, MAX_PRIORITY, MAX_TOKENS

# Bounded number types. A freeness is KV blocks per request, so no threshold can usefully
# exceed the blocks of the longest request chironsim accepts (MAX_TOKENS at one token a block).
Freeness = limited(float, MAX_TOKENS, "blocks per request", ge=0)
Blocks = limited(int, MAX_TOKENS, "blocks", ge=0)
Migrations = limited(int, MAX_NUM_SEQS, "migrations", ge=1)
Checks = limited(int, MAX_PERIODIC_EVENTS, "checks", ge=1)
Priority = limited(int, MAX_PRIORITY, "", ge=-MAX_PRIORITY)

_NONE: Mapping[int, int] = MappingProxyType({})


class LlumnixPolicyConfig(ConfigModel):
    """Llumnix (Sun et al., OSDI 2024): freeness dispatch from polled, stale load reports;
    migration pairing every poll; priority headroom; scaling that drains the terminating
    instance by migration."""

    kind: Literal["llumnix"] = "llumnix"

    # --- polling and dispatch -------------------------------------------------------------
    poll_interval: PolicyInterval = Field(
        0.05, description="seconds between load reports; dispatch and pairing read the last "
        "one (released code 0.05 s; its 37d8e5ea docs say 0.1)")
    dispatch: Literal["llumnix", "infaas", "round_robin"] = Field(
        "llumnix", description="'llumnix': freest instance by dispatch freeness with headroom; "
        "'infaas': the same without headroom (INFaaS++, memory load and queued demand); "
        "'round_robin': load-oblivious")

    # --- migration ------------------------------------------------------------------------
    migration: bool = Field(True, description="pair migrations at every poll (off: INFaaS++)")
    migrate_out_threshold: Freeness = Field(
        3.0, description="migration freeness below which an instance is a source and above "
        "which it is a destination (released code, both versions)")
    request_choice: Literal["last_running", "shortest_running"] = Field(
        "last_running", description="request a source gives up: 'last_running' (37d8e5ea "
        "LCFS, the version closest to the paper) or 'shortest_running' (v0.1.0 SR)")
    max_migrations_out: Migrations = Field(
        1, description="migrations out of one instance at a time that the pairing asks for "
        "(37d8e5ea: one per instance); at most cluster.migration.max_out")
    max_migrations_in: Migrations = Field(
        1, description="migrations into one instance at a time that the pairing asks for "
        "(37d8e5ea: one per instance); at most cluster.migration.max_in")
    busy_pairs: Literal["skip", "exclude"] = Field(
        "skip", description="instances with a migration in flight: 'skip' ranks them with the "
        "others and drops a pair with a busy end, the next-ranked not moving up (released code, "
        "37d8e5ea LLMEngineManager._migrate); 'exclude' leaves them out before ranking so the "
        "next-ranked pair up instead (chironsim's earlier rule: more moves per poll)")
    exclusive_migration: bool = Field(
        True, description="an instance with a migration in flight in either direction is busy "
        "as a source and as a destination (37d8e5ea: one instance_migrating flag per instance, "
        "set on both ends of a pair); false: max_migrations_out / _in count per direction")

    # --- priorities -----------------------------------------------------------------------
    priority_agnostic: bool = Field(
        False, description="ignore priorities: no headroom anywhere, no low-priority-first "
        "migration choice, and priority-agnostic engines (FCFS admission, latest arrival "
        "preempted first: engine.priority_scheduling off, set by the policy) (Llumnix-base)")
    headroom_blocks: dict[Priority, Blocks] = Field(
        default_factory=dict,
        description="KV blocks reserved per class priority on each instance running a request "
        "of it (paper, Algorithm 1; the paper publishes no value and the released code has no "
        "headroom: sweep it). Priorities not listed have none")

    # --- scaling --------------------------------------------------------------------------
    scaling: bool = Field(True, description="run the freeness autoscaler (off: fixed pools)")
    scaling_interval: PolicyInterval = Field(10.0, description="seconds between scaling checks "
                                             "(released code, both versions)")
    scale_up_threshold: Freeness = Field(
        10.0, description="pooled dispatch freeness below which one instance is added "
        "(released code's default; its 37d8e5ea docs say 4; the paper publishes none)")
    scale_down_threshold: Freeness = Field(
        60.0, description="pooled freeness without one instance above which that instance is "
        "drained (released code's default; its 37d8e5ea docs say 100)")
    scaling_sustain: Checks = Field(
        1, description="consecutive checks a condition must hold before scaling (1: the code's "
        "immediate rule; the paper scales after the condition held 'for a period')")
    scaling_freeness: Literal["normal_priority", "all_priorities"] = Field(
        "normal_priority", description="'normal_priority': the pooled freeness without "
        "high-priority headroom (the paper scales on the normal priority's freeness; the code, "
        "having no headroom, computes the same); 'all_priorities': with it")

    @model_validator(mode="after")
    def _consistent(self) -> LlumnixPolicyConfig:
        if self.scale_up_threshold >= self.scale_down_threshold:
            raise ValueError(f"scale_up_threshold ({self.scale_up_threshold}) must be below "
                             f"scale_down_threshold ({self.scale_down_threshold})")
        return self

    def headroom(self) -> Mapping[int, int]:
        """The headroom dispatch and migration charge: none when priority-agnostic."""
        return _NONE if self.priority_agnostic else MappingProxyType(self.headroom_blocks)

    def scaling_headroom(self) -> Mapping[int, int]:
        """The headroom the scaler charges: none for normal-priority freeness."""
        return _NONE if self.scaling_freeness == "normal_priority" else self.headroom()

    @property
    def low_priority_first(self) -> bool:
        """Whether a migration source gives up its lowest-priority requests first."""
        return not self.priority_agnostic

    def engine_needs(self) -> dict[str, tuple[object, str]]:
        """Engine settings the policy needs on every engine, each with the policy key that
        asks for it. Llumnix-base is priority-agnostic as a whole (``reference/README.md``,
        Llumnix, Baselines), engines included, so ``priority_agnostic`` turns the engines'
        ``priority_scheduling`` off; the bundle carries this to the cluster, and the scenario
        check refuses an explicit engine setting that contradicts it."""
        return {"priority_scheduling": (False, "priority_agnostic")} if self.priority_agnostic else {}

    def cluster_bounds(self) -> list[tuple[str, tuple[str, ...], str]]:
        """Policy settings the cluster's mechanisms bound: (policy key, cluster key path,
        what the cluster value limits). The mechanism's limit is what can happen (a move
        past it is refused as 'source busy' or 'destination busy'); the pairing may ask for
        fewer moves at a time, never more: a pair it cannot start would hold a destination
        idle for a poll. None while migration is off (the pairing does not run)."""
        if not self.migration:
            return []
        return [("max_migrations_out", ("migration", "max_out"),
                 "migrations out of one instance the mechanism runs at a time"),
                ("max_migrations_in", ("migration", "max_in"),
                 "migrations into one instance the mechanism runs at a time")]

    def references(self) -> list[tuple[tuple[str | int, ...], str, str]]:
        """No pool or class names: the policy runs every pool on its own reports."""
        return []

    def growable_pools(self, pools: Collection[str]) -> set[str]:
        """Every pool while the scaler runs: a pool with no ready instance gets one as soon
        as requests wait for it (:func:`.scaling.scaling_decision`), so it may start at zero;
        none without the scaler."""
        return set(pools) if self.scaling else set()

    def tick_intervals(self) -> dict[str, float]:
        """Controller periods by config key: the scenario bounds the ticks a run makes. Polls
        are needed by freeness dispatch and by migration; round-robin without migration
        reads none."""
        ticks = {}
        if self.migration or self.dispatch != "round_robin":
            ticks["poll_interval"] = self.poll_interval
        if self.scaling:
            ticks["scaling_interval"] = self.scaling_interval
        return ticks
