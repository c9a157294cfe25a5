"""Migration pairing at every poll (issue 9 item 5; ``reference/llumnix_kunserve.md`` A.2.4).

The released code (``migration_scheduler.py``, filter ``FilterConstrained``, pairing
``DefragConstrained``) does, with ``T = migrate_out_threshold`` (3.0) and ``F_m`` the migration
freeness:

- sources: instances with preempted requests (``num_killed_request > 0``) or ``F_m < T``,
  most loaded (lowest ``F_m``) first;
- destinations: instances with no preempted request and ``F_m > T``, freest first;
- the k-th source migrates one running request to the k-th destination.

A terminating (draining) instance reports ``F_m = −∞``, so it is always a source and never a
destination; it also hands over its waiting requests (v0.1.0 ``migrate_out_waiting_request``:
nothing to copy, the destination only reserves the prompt's blocks).

Choices that are ours, each for a stated reason:

- Instances that cannot act are left out *before* pairing rather than pairing and then
  skipping (37d8e5ea skips a pair whose ends are migrating): a source at its limit of
  migrations out, or with no movable request, would otherwise hold a destination idle for a
  whole poll. The limits are per direction (``max_out`` / ``max_in``, default 1 each: 37d8e5ea
  allows one migration per instance; v0.1.0 dropped the flags because most migrations end
  within a poll, PR #63).
- A terminating source at its limit of migrations out is still paired when it has waiting
  requests: handing those over copies no KV, and waiting for the running migration to end
  would only delay the drain.
- The request moved is chosen on the live source when the move starts
  (:func:`chironsim.contract.load.choose_request`, asked for by the policy's ``Migrate``
  action), not from the poll: a report carries counts only, so polling stays cheap. With
  priorities the source gives up the lowest priority present first (the paper: the source
  prefers low-priority requests; unverified detail, A.2.1); the released code has none.

Decisions are plain records, not simulator actions: the wiring step translates them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from chironsim.contract.load import LoadReport
from chironsim.contract.states import DRAINING, READY
from chironsim.policies.llumnix.freeness import NO_HEADROOM, migration_freeness

Reason = Literal["terminating", "preempted", "overloaded"]


@dataclass(frozen=True, slots=True)
class MigrateRunning:
    """Move one running request (its KV live-migrated) from ``source`` to ``destination``; the
    source chooses which when the migration starts (:func:`choose_request` on live state)."""

    source: str
    destination: str
    reason: Reason


@dataclass(frozen=True, slots=True)
class MoveWaiting:
    """Hand the head of a terminating ``source``'s waiting queue to ``destination`` (no KV to
    copy); one record per waiting request, taken in queue order."""

    source: str
    destination: str
    reason: Reason = "terminating"


Decision = MigrateRunning | MoveWaiting


def pair_migrations(reports: Sequence[LoadReport], *, threshold: float,
                    headroom: Mapping[int, int] = NO_HEADROOM,
                    max_out: int = 1, max_in: int = 1) -> list[Decision]:
    """One poll's migrations: at most one running request per (source, destination) pair,
    plus every waiting request of a terminating source. Reads only ``reports``; which running
    request moves is the source's choice when the move starts."""
    freeness = {r.instance_id: migration_freeness(r, headroom) for r in reports}
    sources: list[tuple[float, str, LoadReport, bool]] = []
    destinations: list[tuple[float, str]] = []
    for r in reports:
        f = freeness[r.instance_id]
        if r.state == READY and r.preempted == 0 and f > threshold and r.migrations_in < max_in:
            destinations.append((-f, r.instance_id))
            continue
        if r.state not in (READY, DRAINING):
            continue
        if not (r.terminating or r.preempted > 0 or f < threshold):
            continue
        candidate = r.movable > 0 and r.migrations_out < max_out
        if candidate or (r.terminating and r.waiting):
            sources.append((f, r.instance_id, r, candidate))
    sources.sort(key=lambda s: (s[0], s[1]))
    destinations.sort()
    decisions: list[Decision] = []
    for (_, _, src, candidate), (_, dst) in zip(sources, destinations):
        reason: Reason = ("terminating" if src.terminating
                          else "preempted" if src.preempted > 0 else "overloaded")
        if candidate:
            decisions.append(MigrateRunning(src.instance_id, dst, reason))
        if src.terminating:
            decisions.extend(MoveWaiting(src.instance_id, dst) for _ in range(src.waiting))
    return decisions
