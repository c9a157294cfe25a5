"""A request's mutable progress inside the simulation.

The workload's :class:`~chironsim.workload.spec.RequestSpec` is immutable; this object carries
what happens to it: where it is, how many tokens it has, and the timing facts its record needs.
While a request decodes on an instance, its generated-token count is kept *lazily* as
``gen_at_join + (instance.step - join_step)`` (see :mod:`chironsim.sim.decode_set`); call
:meth:`Instance.settle` before reading ``generated`` for a decoding request.
"""

from __future__ import annotations

import math

from chironsim.workload.spec import RequestSpec

# Phases a request moves through. Terminal statuses are in chironsim.metrics.records.
ARRIVED = "arrived"
QUEUED = "queued"          # in a cluster-level queue, not yet on an instance
WAITING = "waiting"        # in an instance's waiting queue (needs prefill)
PREFILLING = "prefilling"  # admitted, prefill chunks in progress
DECODING = "decoding"
SWAPPED = "swapped"        # KV in host memory, waiting to be swapped back in
DONE = "done"


class Request:
    """Progress of one request. Slots keep a long trace's footprint small."""

    __slots__ = (
        "request_id", "spec", "request_class", "priority", "prompt_tokens", "output_tokens",
        "arrival", "deadline", "phase", "generated", "prefilled", "prefill_target",
        "first_token_time", "last_token_time", "finish_time", "itl_max", "preemptions",
        "migrations", "evictions", "instances", "instance", "join_step", "gen_at_join",
        "ctx_key", "finish_step", "status", "kv_home", "saved_blocks", "restore_remote",
        "admit_time",
    )

    def __init__(self, request_id: int, spec: RequestSpec, priority: int) -> None:
        self.request_id = request_id
        self.spec = spec
        self.request_class = spec.request_class
        self.priority = priority
        self.prompt_tokens = spec.prompt_tokens
        self.output_tokens = spec.output_tokens
        self.arrival = spec.arrival
        self.deadline = math.nan if spec.deadline is None else spec.deadline
        self.phase = ARRIVED
        self.generated = 0
        self.prefilled = 0
        # Tokens to (re)compute before the next token can be sampled: the prompt at first,
        # prompt + generated after a recompute preemption.
        self.prefill_target = spec.prompt_tokens
        self.first_token_time = math.nan
        self.last_token_time = math.nan
        self.finish_time = math.nan
        self.itl_max = math.nan
        self.preemptions = 0
        self.migrations = 0
        self.evictions = 0
        self.instances: list[str] = []
        self.instance = None
        self.join_step = 0
        self.gen_at_join = 0
        self.ctx_key = 0
        self.finish_step = 0
        self.status = ""
        # Set while evicted with its KV saved in an instance's host memory (Chiron's fast
        # restart); the instance that places it next restores that KV instead of recomputing.
        self.kv_home = None
        self.saved_blocks = 0
        self.restore_remote = False
        # When the request first joined a batch (its prefill admitted) on any instance; a
        # preemption, eviction or migration later does not move it (see RequestRecord.queue_s).
        self.admit_time = math.nan

    @property
    def context_tokens(self) -> int:
        """Tokens whose KV the request holds or needs: prompt plus generated so far."""
        return self.prompt_tokens + self.generated

    def note_itl(self, gap: float) -> None:
        """Fold one inter-token gap into the running maximum."""
        if math.isnan(self.itl_max) or gap > self.itl_max:
            self.itl_max = gap

    def sort_key(self) -> tuple[int, float, int]:
        """Admission order: class priority (lower first), then arrival (FCFS), then id."""
        return (self.priority, self.arrival, self.request_id)

    def fcfs_key(self) -> tuple[int, float, int]:
        """Admission order of a priority-agnostic engine: arrival (FCFS), then id."""
        return (0, self.arrival, self.request_id)

    def __repr__(self) -> str:
        return (f"Request({self.request_id}, {self.request_class}, {self.phase}, "
                f"{self.generated}/{self.output_tokens})")
