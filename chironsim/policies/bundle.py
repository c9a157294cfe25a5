"""What a configured policy hands the simulator: a router and the autoscalers to tick.

The simulator routes each arrival to an accepting instance among the pools that serve the
request's class, asking ``router`` to choose, and calls each autoscaler's ``on_tick`` every
``autoscaler.interval`` simulated seconds. Later policies (chiron, llumnix, kunserve) add their
own pieces; the bundle stays a plain container so the simulator needs no knowledge of them.
"""

from __future__ import annotations

from dataclasses import dataclass

from chironsim.policies.base import Autoscaler, Router


@dataclass
class PolicyBundle:
    """One simulation's policy objects. They hold state, so a bundle serves one run only."""

    router: Router
    autoscalers: list[Autoscaler]
    name: str
