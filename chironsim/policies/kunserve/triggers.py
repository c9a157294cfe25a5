"""When a group drops its replicated layers, and when a fused group restores them.

The released code's rules (``reference/llumnix_kunserve.md`` B.2, ``flash_backend.py``
``vote_for``, ``coordinator.py``), checked every ``drop_check_interval`` (0.1 s):

- an independent member votes to drop when its usage ≥ ``drop_usage`` (95 %) and the blocks its
  queued requests need ≥ its free blocks; a group drops when at least ⌊g/2⌋ members vote, and at
  least one (issue 10 item 2). As in the code, a full member with nothing queued and no free
  block (0 ≥ 0) votes too.
- a fused group restores when restore is on, it has no queued request, its usage ≤
  ``restore_usage`` (50 %) and its usage is falling over the window (:class:`UsageWindow`).

``trigger_scope: per_group`` (default; the paper's "no unnecessary cooperation") drops exactly
the groups whose members voted; ``all_groups`` (the released code) drops every independent
group once any one triggers. Restore is decided per group in both scopes: the code's leader
votes RESTORE for its own group (B.2), and the sources say nothing of a global restore.

Decisions are plain records; ties and orders follow the group ids, so runs are deterministic.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from chironsim.policies.kunserve.config import KunServePolicyConfig
from chironsim.policies.kunserve.sample import UsageSample
from chironsim.policies.kunserve.window import UsageWindow


@dataclass(frozen=True, slots=True)
class DropGroup:
    """Fuse group ``group``: its members drop their replicated layers and form one pipeline."""

    group: int


@dataclass(frozen=True, slots=True)
class RestoreGroup:
    """Reload fused group ``group``'s dropped layers, convert its requests back, then split."""

    group: int


def votes_to_drop(sample: UsageSample, drop_usage: float) -> bool:
    """A member's vote: usage ≥ ``drop_usage`` and queued demand ≥ free blocks (B.2)."""
    return sample.usage >= drop_usage and sample.pending_blocks >= sample.free_blocks


def group_triggers(members: Sequence[UsageSample], drop_usage: float) -> bool:
    """Whether a group of these members drops: votes ≥ ⌊g/2⌋ and ≥ 1, g its member count (a
    group of one has no peer to fuse with and never drops)."""
    if len(members) < 2:
        return False
    votes = sum(votes_to_drop(s, drop_usage) for s in members)
    return votes >= max(1, len(members) // 2)


def drop_decisions(independent: Mapping[int, Sequence[UsageSample]],
                   config: KunServePolicyConfig) -> list[DropGroup]:
    """The groups to fuse now, from the latest samples of every independent (unfused) group's
    members, keyed by group id; in group-id order."""
    triggered = [g for g in sorted(independent) if group_triggers(independent[g], config.drop_usage)]
    if triggered and config.trigger_scope == "all_groups":
        triggered = [g for g in sorted(independent) if len(independent[g]) >= 2]
    return [DropGroup(g) for g in triggered]


def should_restore(sample: UsageSample, window: UsageWindow, restore_usage: float) -> bool:
    """A fused group's restore vote: no queue, usage ≤ ``restore_usage``, usage falling (B.2)."""
    return sample.queued == 0 and sample.usage <= restore_usage and window.falling


def restore_decisions(fused: Mapping[int, tuple[UsageSample, UsageWindow]],
                      config: KunServePolicyConfig) -> list[RestoreGroup]:
    """The fused groups to restore now, from each one's latest sample (the whole group's) and
    its usage window since it fused; in group-id order. None when restore is off."""
    if not config.restore:
        return []
    return [RestoreGroup(g) for g in sorted(fused)
            if should_restore(fused[g][0], fused[g][1], config.restore_usage)]
