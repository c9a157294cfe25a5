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

Instances with a migration in flight (``busy``), as the released code does by default
(``llm_engine_manager.py`` ``LLMEngineManager._migrate`` at ``37d8e5ea``):

- ``busy="skip"`` (default): sources and destinations are ranked among *all* instances past the
  threshold, busy ones included, and the k-th pair is dropped when either end is busy (the code
  ``continue``s on ``instance_migrating[src] or instance_migrating[dst]``); the next-ranked
  instances do not move up to take its place. A source with nothing movable also uses up its
  pair (the code pairs it, then ``migrate_out`` finds no request and returns).
- ``exclusive=True`` (default): an instance is busy in both roles while any migration into *or*
  out of it is in flight (the code keeps one ``instance_migrating`` flag per instance and sets
  it on both ends of a pair), so a destination whose reservation has just pushed it below the
  threshold does not start sending before its incoming request has landed. With ``False`` the
  limits count per direction (``max_out`` / ``max_in``).
- ``busy="exclude"``: chironsim's earlier choice, kept as an option: busy sources and
  destinations are left out before ranking, so the next-ranked pair up instead (more moves per
  poll than the released code).

The limits are ``max_out`` / ``max_in`` (default 1 each: 37d8e5ea allows one migration per
instance; v0.1.0 dropped the flags because most migrations end within a poll, PR #63). The code
clears both flags of a poll's pairs when all of that poll's migrations have ended
(``asyncio.gather`` then ``_post_migrate``); here an instance is free again as soon as its own
migration ends (the report's counts).

Choices that are ours, each for a stated reason:

- A terminating source that is busy is still paired when it has waiting requests: handing
  those over copies no KV, and waiting for the running migration to end would only delay the
  drain.
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


Busy = Literal["skip", "exclude"]


def can_send(r: LoadReport, max_out: int = 1, exclusive: bool = True) -> bool:
    """Whether ``r`` can start a running request's migration out now: something movable, below
    its limit out and, when migrations are ``exclusive``, nothing migrating into it."""
    return (r.movable > 0 and r.migrations_out < max_out
            and not (exclusive and r.migrations_in > 0))


def can_take(r: LoadReport, max_in: int = 1, exclusive: bool = True) -> bool:
    """Whether ``r`` can take a migration in now: below its limit in and, when migrations are
    ``exclusive``, nothing migrating out of it."""
    return r.migrations_in < max_in and not (exclusive and r.migrations_out > 0)


def pair_migrations(reports: Sequence[LoadReport], *, threshold: float,
                    headroom: Mapping[int, int] = NO_HEADROOM,
                    max_out: int = 1, max_in: int = 1, busy: Busy = "skip",
                    exclusive: bool = True) -> list[Decision]:
    """One poll's migrations: at most one running request per (source, destination) pair,
    plus every waiting request of a terminating source. Reads only ``reports``; which running
    request moves is the source's choice when the move starts. ``busy`` and ``exclusive``: how
    instances with a migration in flight take part (module docstring)."""
    if busy not in ("skip", "exclude"):
        raise ValueError(f"unknown busy rule {busy!r}")
    keep_busy = busy == "skip"
    freeness = {r.instance_id: migration_freeness(r, headroom) for r in reports}
    sources: list[tuple[float, str, LoadReport]] = []
    destinations: list[tuple[float, str, LoadReport]] = []
    for r in reports:
        f = freeness[r.instance_id]
        if r.state == READY and r.preempted == 0 and f > threshold:
            if keep_busy or can_take(r, max_in, exclusive):
                destinations.append((-f, r.instance_id, r))
            continue
        if r.state not in (READY, DRAINING):
            continue
        if not (r.terminating or r.preempted > 0 or f < threshold):
            continue
        if keep_busy or can_send(r, max_out, exclusive) or (r.terminating and r.waiting):
            sources.append((f, r.instance_id, r))
    sources.sort(key=lambda s: (s[0], s[1]))
    destinations.sort(key=lambda d: (d[0], d[1]))
    decisions: list[Decision] = []
    for (_, _, src), (_, dst, dst_report) in zip(sources, destinations):
        if not can_take(dst_report, max_in, exclusive):
            continue  # the released code drops the pair; the next destination does not move up
        reason: Reason = ("terminating" if src.terminating
                          else "preempted" if src.preempted > 0 else "overloaded")
        if can_send(src, max_out, exclusive):
            decisions.append(MigrateRunning(src.instance_id, dst, reason))
        if src.terminating:
            decisions.extend(MoveWaiting(src.instance_id, dst) for _ in range(src.waiting))
    return decisions
