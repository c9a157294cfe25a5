"""What an instance reports to a load-balancing manager at each poll (Llumnix, issue 9 item 3).

Llumnix's global scheduler does not read live engine state: every ``poll_interval`` (0.05 s in
the released code, ``reference/llumnix_kunserve.md`` A.2.3) it collects one report per instance
and dispatches, pairs migrations and scales from those reports until the next poll. Between
polls the reports are stale on purpose: a dispatch does not update the stored load, so a burst
inside one interval lands on one instance. Everything a Llumnix-style policy reads therefore
comes from a :class:`LoadReport`; nothing here is a live view.

The fields are those of the released code's ``InstanceInfo`` (``llumnix/instance_info.py`` at
``37d8e5ea``: free/watermark blocks, running, waiting, ``num_block_all_waiting_request``,
``num_block_first_waiting_request``, ``num_killed_request``) plus what the paper's priorities
and the simulator's migration limits need (priorities running, migrations in flight, requests
that could move).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from chironsim.contract.states import DRAINING, READY


@dataclass(frozen=True, slots=True)
class RunningRequest:
    """One running request as a migration chooser needs it.

    ``tokens`` is the sequence length so far (prompt + generated): what the released code's
    shortest/longest-running choices sort by (``seq_group.get_seqs()[0].get_len()``). ``blocks``
    is the KV it holds (what a migration must copy). ``start`` orders the running queue (larger
    = later): the request's arrival time, since the released code's engine keeps its running
    queue in arrival order (vLLM 0.4.2 FCFS) and a migrated request keeps its arrival; so "last
    running" is the latest arrival, not the latest to join this instance.
    ``movable`` is false while the request is still prefilling or already migrating out: the
    released code picks decode-phase requests only, and a request moves at most once at a time.
    """

    request_id: int
    priority: int
    tokens: int
    blocks: int
    start: float
    movable: bool = True


RequestChoice = Literal["last_running", "shortest_running"]


def choose_request(running: Sequence[RunningRequest], choice: RequestChoice,
                   low_priority_first: bool = False) -> RunningRequest | None:
    """The running request a source gives up, among the movable ones (decoding, not already
    migrating; the code excludes prefilling requests): ``last_running`` = last in the running
    queue, i.e. the latest arrival (37d8e5ea ``LCFS``), ``shortest_running`` = shortest sequence
    so far (v0.1.0 ``SR``). Ties fall to the smaller request id. ``None`` when nothing can move."""
    movable = [r for r in running if r.movable]
    if low_priority_first and movable:
        lowest = max(r.priority for r in movable)  # a larger number is a lower priority
        movable = [r for r in movable if r.priority == lowest]
    if not movable:
        return None
    if choice == "last_running":
        return min(movable, key=lambda r: (-r.start, r.request_id))
    if choice == "shortest_running":
        return min(movable, key=lambda r: (r.tokens, r.request_id))
    raise ValueError(f"unknown request choice {choice!r}")


@dataclass(frozen=True, slots=True)
class LoadReport:
    """One instance at one poll: counts only, so a poll costs O(1) per instance.

    ``free_blocks`` already excludes blocks reserved for incoming migrations: the reference
    (A.1) counts a destination's reservation as used memory, so a reservation lowers the
    destination's freeness from stage 0. ``waiting_prompt_blocks`` (Σ over waiting requests)
    and ``head_of_line_blocks`` (the first waiting request) are prompt demands in blocks; the
    released code computes them as ``prompt_len / block_size`` without rounding up, hence
    floats. ``preempted`` is the code's ``num_killed_request``: swapped-out requests plus
    waiting ones that had been running before. ``movable`` counts the running requests a
    migration could take (decoding and not already moving); which one goes is chosen on the
    live source when the migration starts (:func:`choose_request`), so the report carries no
    per-request list. ``running_priorities`` are the class priorities with at least one
    running request, what the paper's headroom needs.
    """

    instance_id: str
    pool: str
    state: str
    total_blocks: int
    free_blocks: int
    watermark_blocks: int
    running: int = 0
    waiting: int = 0
    waiting_prompt_blocks: float = 0.0
    head_of_line_blocks: float = 0.0
    preempted: int = 0
    migrations_out: int = 0
    migrations_in: int = 0
    movable: int = 0
    running_priorities: tuple[int, ...] = ()
    #: the fused group (its leader's id) the instance belongs to, '' when independent
    group: str = ""

    @property
    def terminating(self) -> bool:
        """A draining instance is being scaled down: Llumnix drains it by migration."""
        return self.state == DRAINING

    @property
    def accepting(self) -> bool:
        """Only ready instances take dispatches or migrations in."""
        return self.state == READY
