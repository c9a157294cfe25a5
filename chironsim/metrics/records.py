"""Flat, immutable outcome records: one per request and one per instance.

Each outcome is one record with plain fields, so the result tables are tidy by construction:
``pandas.DataFrame(records)`` is the table. The simulator builds a record when a request reaches
its terminal state (or when the horizon cuts it off) and when an instance stops.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Terminal states. Every arrival ends in exactly one of them.
FINISHED = "finished"
REJECTED = "rejected"
UNFINISHED = "unfinished"
TERMINAL_STATES = (FINISHED, REJECTED, UNFINISHED)


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """What happened to one request.

    Times are absolute simulated seconds; latencies are seconds and ``nan`` where undefined
    (no first token yet, or fewer than two tokens for ``tpot``). ``tpot`` is the mean
    inter-token latency after the first token, ``itl_max`` the largest gap between consecutive
    tokens. ``instances`` lists the instance ids the request ran on, ``;``-separated.

    ``queue_s`` is the queueing time: from arrival to the request's *first* admission to a
    batch on any instance (the iteration boundary at which its prefill was admitted, whether
    it waited in a cluster queue, an instance's queue or both). Time spent waiting again after
    a preemption, an eviction or a migration is not included (it shows in ``ttft``, ``e2e``,
    ``itl_max``); ``nan`` for a request never admitted (rejected, or still queued at the
    horizon). Added last, so the earlier columns keep their positions.
    """

    request_id: int
    request_class: str
    arrival: float
    prompt_tokens: int
    output_tokens: int
    generated_tokens: int
    status: str
    first_token_time: float
    finish_time: float
    ttft: float
    tpot: float
    itl_max: float
    e2e: float
    deadline: float
    preemptions: int
    migrations: int
    evictions: int
    instances: str
    slo_met: bool
    queue_s: float = float("nan")


@dataclass(frozen=True, slots=True)
class InstanceRecord:
    """Life and cost of one instance. GPU-seconds are billed from provisioning to stop."""

    instance_id: str
    pool: str
    gpu: str
    model: str
    tp: int
    num_gpus: int
    provision_time: float
    ready_time: float
    drain_time: float
    stop_time: float
    gpu_seconds: float
    tokens_prefilled: int
    tokens_generated: int
    requests_finished: int
    iterations: int
    busy_seconds: float
