"""Typed events: every row of ``events.parquet`` is of one declared kind.

A kind declares its name and what its columns carry, once, beside the mechanism that emits
it; the emitter refuses a kind that was never declared, so a misspelt kind cannot reach the
table and a new mechanism (migration and its stages, parameter drop and restore) adds its
kinds as first-class rows without touching this module. The columns stay those of
:data:`chironsim.metrics.tables.EVENTS_SCHEMA`: ``pool`` and ``instance_id`` are empty and
``request_id`` is -1 for an event without one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

#: Which id columns a kind fills.
CLUSTER, INSTANCE, REQUEST = "cluster", "instance", "request"


@dataclass(frozen=True, slots=True)
class EventKind:
    """One kind of event row: its ``kind`` value and what ``reason`` and ``detail`` hold."""

    name: str
    subject: str   # CLUSTER, INSTANCE (pool + instance id) or REQUEST (and its instance)
    reason: str    # what the reason column says
    detail: str = ""  # what the detail column says; empty when unused


_KINDS: dict[str, EventKind] = {}


def event_kind(name: str, subject: str, reason: str, detail: str = "") -> EventKind:
    """Declare a kind (idempotent for an identical declaration, refused for a different one)."""
    kind = EventKind(name, subject, reason, detail)
    existing = _KINDS.setdefault(name, kind)
    if existing != kind:
        raise ValueError(f"event kind {name!r} is already declared as {existing}")
    return existing


def event_kinds() -> dict[str, EventKind]:
    """Every declared kind by name."""
    return dict(_KINDS)


SCALE_UP = event_kind("scale_up", INSTANCE, "the policy's reason", "active instances before->after")
SCALE_DOWN = event_kind("scale_down", INSTANCE, "the policy's reason",
                        "active instances before->after, or 'drain' for a Drain action")
INSTANCE_READY = event_kind("instance_ready", INSTANCE, "cold start done")
INSTANCE_STOPPED = event_kind("instance_stopped", INSTANCE, "drained")
SET_MAX_NUM_SEQS = event_kind("set_max_num_seqs", INSTANCE, "the policy's reason", "old->new")
PREEMPT = event_kind("preempt", REQUEST, "why the request lost its KV (recompute)")
SWAP_OUT = event_kind("swap_out", REQUEST, "blocks moved to host memory")
SWAP_IN = event_kind("swap_in", REQUEST, "blocks restored, '(moved)' when from another host")
EVICT = event_kind("evict", REQUEST, "the higher-priority request it made room for")
REJECT = event_kind("reject", REQUEST, "why it can never be served")


class EventLog:
    """The run's event rows, appended in simulated-time order."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self.rows: list[dict] = []

    def emit(self, kind: EventKind, pool: str = "", instance_id: str = "", request_id: int = -1,
             reason: str = "", detail: str = "") -> None:
        if _KINDS.get(kind.name) is not kind:
            raise ValueError(f"event kind {kind!r} was never declared with event_kind()")
        self.rows.append({"time": self._clock(), "kind": kind.name, "pool": pool,
                          "instance_id": instance_id, "request_id": request_id,
                          "reason": reason, "detail": detail})
