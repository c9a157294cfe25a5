"""Service-level objectives per request class, and whether a request met its class's SLO."""

from __future__ import annotations

import math

from pydantic import Field

from chironsim.config_base import ConfigModel, limited
from chironsim.limits import MAX_PRIORITY


class SLOSpec(ConfigModel):
    """Bounds a request of one class must meet; a bound left unset is not checked.

    A request meets its SLO only if it finished and every set bound holds. ``deadline: true``
    additionally requires finishing by the request's own deadline (batch jobs carry one).
    """

    ttft: float | None = Field(default=None, gt=0, description="time to first token bound (s)")
    tpot: float | None = Field(default=None, gt=0, description="mean inter-token latency bound (s)")
    itl_max: float | None = Field(default=None, gt=0, description="largest inter-token gap bound (s)")
    e2e: float | None = Field(default=None, gt=0, description="end-to-end latency bound (s)")
    deadline: bool = Field(default=False, description="require finishing by the request's deadline")


#: a class's scheduling priority (lower is served first)
Priority = limited(int, MAX_PRIORITY, "", ge=-MAX_PRIORITY)


class RequestClassSpec(ConfigModel):
    """A named class of requests: its scheduling priority (lower is served first) and its SLO."""

    priority: Priority = 0
    slo: SLOSpec = SLOSpec()


def slo_met(
    slo: SLOSpec,
    finished: bool,
    ttft: float,
    tpot: float,
    itl_max: float,
    e2e: float,
    finish_time: float,
    deadline: float,
) -> bool:
    """True when a finished request satisfies every bound its class sets.

    ``tpot``/``itl_max`` are ``nan`` for one-token answers; such a request has no inter-token
    gap, so those bounds hold trivially.
    """
    if not finished:
        return False
    if slo.ttft is not None and not ttft <= slo.ttft:
        return False
    if slo.tpot is not None and not math.isnan(tpot) and tpot > slo.tpot:
        return False
    if slo.itl_max is not None and not math.isnan(itl_max) and itl_max > slo.itl_max:
        return False
    if slo.e2e is not None and not e2e <= slo.e2e:
        return False
    if slo.deadline and not math.isnan(deadline) and finish_time > deadline:
        return False
    return True
