"""The immutable description of one request as a workload produces it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RequestSpec:
    """One request before simulation: when it arrives and how long its prompt and answer are.

    ``arrival`` is simulated seconds from the start of the run. ``deadline`` is an absolute
    simulated time (s) by which a batch request should finish, or ``None``. ``prefix_hashes``
    are the prefix-block ids a Mooncake trace carries (equal ids = reusable KV), else ``None``.
    """

    arrival: float
    prompt_tokens: int
    output_tokens: int
    request_class: str = "default"
    deadline: float | None = None
    prefix_hashes: tuple[int, ...] | None = None
