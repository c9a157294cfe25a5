"""Actions policies return; the cluster validates and applies them and logs each as an event."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ScaleTo:
    """Set the number of active (provisioning + loading + ready) instances of ``pool``.

    Scaling up provisions cold instances; scaling down drains the instances with the fewest
    outstanding requests first (they stop once empty). The cluster clamps to the pool's bounds.
    """

    pool: str
    instances: int
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Drain:
    """Stop sending work to ``instance_id``; it stops once it holds no requests."""

    instance_id: str
    reason: str = ""


@dataclass(frozen=True, slots=True)
class SetMaxNumSeqs:
    """Change an instance's batch-size limit (takes effect at its next iteration)."""

    instance_id: str
    max_num_seqs: int
    reason: str = ""


Action = ScaleTo | Drain | SetMaxNumSeqs
