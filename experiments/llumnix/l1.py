"""L1, the migration micro-benchmark (Llumnix, OSDI 2024, Fig. 10): one request decoding on
instance A is migrated to instance B once its sequence reaches a target length; we measure the
downtime (stop → first iteration on B), the whole migration's time and its stages, for live
migration and the paper's two baselines (blocking copy, recompute).

The trigger is :class:`MigrateAtLength`, a tiny autoscaler-like driver built on the public
:class:`~chironsim.contract.actions.Migrate` action: it watches the source's generated-token
count in the cluster view and issues one ``Migrate`` when prompt + generated reaches the target.
It is added to a simulation that chironsim's own runner builds from a plain scenario config
(:func:`chironsim.experiments.runner.build_simulation`), so the cluster, engine, latency model
and migration mechanism are exactly those of ``chironsim run``.

Context. LLaMA-7B's catalog context is 2,048 tokens and the instance rejects a longer request at
admission. Fig. 10 goes to 8k (``reference/llumnix_kunserve.md`` A.1, from llumnix-ray issue #2,
which does not name the model; the paper's models are LLaMA-7B and -30B, both 2k context, and
issue 9 asks for LLaMA-7B on A10). Fig. 10 measures the KV copy,
which depends on the model's shapes (32 layers × 4096 hidden, fp16: 0.5 MiB per token, 8 MiB
per 16-token block), not on what the model was trained to attend over. So the ``llama-7b``
cases raise the instance's admission bound (:data:`EXTENDED_CONTEXT`) through the public
``Instance.max_context`` attribute; that bound enters nowhere else in the simulator (it is read
once, at admission). ``llama-2-7b`` has the same shapes and a 4k catalog context: the
cases that its context admits together with the tokens still to generate (1k and 2k) run
with no override and serve as the check that the override changes nothing else.

Randomness. The scenario has no random draw: one request at t = 0 (a batch stream), fixed
lengths, a fixed router, deterministic iteration times and copy times. Its results do not
depend on the seed; :func:`check_seed_independent` verifies it on two seeds, and the stage runs
each case once rather than replicating a deterministic number.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from chironsim.catalog import get_model
from chironsim.contract.actions import Migrate
from chironsim.experiments.config import parse_config
from chironsim.experiments.runner import build_simulation

HERE = Path(__file__).resolve().parent

#: Sequence lengths at migration time (tokens): the paper's Fig. 10 x-axis.
LENGTHS = (1024, 2048, 4096, 8192)
MODES = ("live", "blocking", "recompute")
#: Tokens the request generates on the source before the migration starts: it must be decoding
#: (a prefilling request is not a migration candidate) and have a steady batch.
GENERATED_BEFORE = 16
#: Tokens still to generate after the migration: enough that the request is decoding on the
#: destination well after every stage has ended (a live migration of 8k takes about 1 s, i.e.
#: some 40 decode steps at this batch size).
GENERATED_AFTER = 256
#: Admission bound of the extended-context LLaMA-7B (the longest case plus what it generates).
EXTENDED_CONTEXT = max(LENGTHS) + GENERATED_AFTER
#: How often the driver looks at the source (s); the migration starts at the source's next
#: iteration boundary after the tick that sees the target length.
TICK_S = 0.002
BLOCK_SIZE = 16


@dataclass(frozen=True)
class Case:
    model: str
    tokens: int
    mode: str
    seed: int = 0

    @property
    def prompt(self) -> int:
        return self.tokens - GENERATED_BEFORE

    @property
    def needs_extended_context(self) -> bool:
        return self.prompt + GENERATED_BEFORE + GENERATED_AFTER > get_model(self.model).max_context


class MigrateAtLength:
    """Issues one ``Migrate(src → dst)`` once the source has generated ``after_tokens`` tokens
    (with a single request on the source, its generated-token count is that request's)."""

    def __init__(self, src: str, dst: str, request_id: int, after_tokens: int,
                 interval: float = TICK_S) -> None:
        self.src, self.dst, self.request_id = src, dst, request_id
        self.after_tokens = after_tokens
        self.interval = interval
        self.issued_at: float | None = None

    def on_tick(self, view) -> list[Migrate]:
        if self.issued_at is not None:
            return []
        for pool in view.pools.values():
            for inst in pool.instances:
                if inst.instance_id == self.src and inst.tokens_generated >= self.after_tokens:
                    self.issued_at = view.time
                    return [Migrate(self.src, self.dst, request_id=self.request_id,
                                    reason=f"L1: sequence reached {self.after_tokens} generated")]
        return []


def scenario(case: Case) -> dict[str, Any]:
    """The scenario config: 2 instances of the model on one A10 each (TP 1), the cluster's
    ``migration`` block in the case's mode with chironsim's defaults (α 6 ms, 4.5 GB/s,
    3 stages, last stage ≤ 4 blocks: reference/README.md, Llumnix), one request at t = 0."""
    return {
        "name": f"l1-{case.model}-{case.tokens}-{case.mode}-s{case.seed}",
        "seed": case.seed,
        "drain_s": 600,
        "sample_interval_s": 1.0,
        "classes": {"default": {"priority": 0}},
        "workload": {"streams": [{
            "kind": "batch", "request_class": "default", "num_requests": 1, "submit_at": 0.0,
            "deadline_s": 3600,
            "prompt_tokens": {"kind": "fixed", "value": case.prompt},
            "output_tokens": {"kind": "fixed", "value": GENERATED_BEFORE + GENERATED_AFTER},
        }]},
        "cluster": {
            "model": case.model, "gpu": "a10",
            "engine": {"max_num_batched_tokens": 8192, "block_size": BLOCK_SIZE},
            "migration": {"mode": case.mode},
            "pools": {"default": {"instances": 2}},
        },
        # round robin: the one request goes to default-0, default-1 stays empty
        "policy": {"kind": "static", "router": {"kind": "round_robin"}},
    }


def _detail(text: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in text.split(";") if "=" in part)


def _simulate(case: Case, migrate: bool):
    config = parse_config(scenario(case), "<l1>", HERE)
    sim, _bundle = build_simulation(config, HERE)
    if case.needs_extended_context:
        for inst in sim.cluster.live_instances():
            inst.max_context = max(inst.max_context, EXTENDED_CONTEXT)
    if migrate:
        sim.autoscalers.append(MigrateAtLength("default-0", "default-1", request_id=0,
                                               after_tokens=GENERATED_BEFORE))
    sim.run()
    return config, sim


def unmigrated_e2e_s(case: Case) -> float:
    """End-to-end time of the same request when nothing moves it (the reference for the
    migration's whole cost to the request)."""
    _config, sim = _simulate(case, migrate=False)
    record = next(r for r in sim.request_records if r.request_id == 0)
    assert record.status == "finished" and record.migrations == 0, record
    return record.finish_time - record.arrival


def run_case(case: Case, reference_e2e_s: float | None = None) -> dict[str, Any]:
    """Simulate one case and return its row: downtime, total time, stages and blocks; with
    ``reference_e2e_s`` (:func:`unmigrated_e2e_s`) also the end-to-end time the migration
    added to the request."""
    config, sim = _simulate(case, migrate=True)

    events = [e for e in sim.events if e["kind"].startswith("migrate") and e["request_id"] == 0]
    kinds = [e["kind"] for e in events]
    record = next(r for r in sim.request_records if r.request_id == 0)
    if "migrate_done" not in kinds:
        reasons = [e["reason"] for e in events if e["kind"] == "migrate_abort"]
        raise RuntimeError(f"{case}: no migration completed (events {kinds}, aborts {reasons}, "
                           f"request {record.status})")
    start = next(e for e in events if e["kind"] == "migrate_start")
    done = next(e for e in events if e["kind"] == "migrate_done")
    stages = [e for e in events if e["kind"] == "migrate_stage"]
    info = _detail(done["detail"])
    spec = sim.cluster.pools["default"]
    block_seconds = spec.migration_copy.seconds(1)
    return {
        **asdict(case),
        "context_override": case.needs_extended_context,
        "blocks_at_start": int(_detail(start["detail"])["blocks"]),
        "downtime_ms": 1e3 * float(info["downtime_s"]),
        "total_ms": 1e3 * (done["time"] - start["time"]),
        "stages": int(info["stages"]),
        "blocks_copied": int(info["blocks"]),
        "stage_blocks": "+".join(_detail(e["detail"])["blocks"] for e in stages),
        "final_stage_blocks": int(_detail(stages[-1]["detail"])["blocks"]) if stages else 0,
        "block_ms": 1e3 * block_seconds,
        "alpha_ms": 1e3 * config.cluster.migration.stage_alpha_s,
        "status": record.status,
        "migrations": record.migrations,
        "itl_max_ms": 1e3 * record.itl_max,
        "added_e2e_ms": (math.nan if reference_e2e_s is None
                         else 1e3 * (record.finish_time - record.arrival - reference_e2e_s)),
    }


def check_seed_independent(case: Case, seeds: tuple[int, int] = (0, 1)) -> bool:
    """True when two seeds give the same row (apart from the seed): the scenario is
    deterministic, so one run per case is the whole measurement."""
    rows = [run_case(Case(case.model, case.tokens, case.mode, s)) for s in seeds]
    for row in rows:
        row.pop("seed")
    return rows[0] == rows[1]


def cases(models: tuple[str, ...] = ("llama-7b", "llama-2-7b")) -> list[Case]:
    """LLaMA-7B at every length (context raised past 2k where needed); Llama-2-7B (same
    shapes, 4k context) at the lengths its catalog context admits, with no override."""
    out = []
    for model in models:
        for tokens in LENGTHS:
            for mode in MODES:
                case = Case(model, tokens, mode)
                if model != "llama-7b" and case.needs_extended_context:
                    continue
                out.append(case)
    return out
