"""Pipelined execution of a fused group: stage split, activation hops, micro-batch and cycle time.

A KunServe group of g instances that dropped its replicated layers runs as one g-stage
pipeline (issue 10 item 1; reference/README.md, KunServe, "Pipeline execution"; evidence in
reference/llumnix_kunserve.md B.1, "Execution cost model after the drop"). This module prices
it from the roofline (`IterationTimeModel.stage_time`) and the measured send/recv curves
(`CommModel.send_recv`); it holds no state and knows nothing of the simulator.

Schedule assumed (the paper's is not published; B.1 says only "g micro-batch queues keep the
pipeline full"): every stage serves the micro-batches in the same fixed order (queue 0, 1, ...,
M-1, then queue 0 again), one at a time, without reordering; a micro-batch enters stage i when
stage i-1 has finished it and its activations have arrived, and stage i has finished the
micro-batch before it; a micro-batch's next iteration enters stage 0 when its previous one has
left the last stage (it needs the sampled tokens). A hop delays only the micro-batch it carries
(sends overlap the next micro-batch's compute, as NCCL's asynchronous sends do), and returning
the sampled token ids to stage 0 is not priced (a few bytes per sequence).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from chironsim.errors import ConfigError
from chironsim.perf.comm import CommModel
from chironsim.perf.roofline import DTYPE_BYTES, IterationTimeModel

_NEVER = -math.inf


def stage_layers(num_layers: int, stages: int) -> tuple[int, ...]:
    """Layers each stage keeps: instance i keeps [i·L/g, (i+1)·L/g) (reference B.1), rounded down
    at both ends when g does not divide L, so the stages differ by at most one layer and always
    sum to L."""
    if not 1 <= stages <= num_layers:
        raise ConfigError(f"a pipeline of {num_layers} layers takes 1..{num_layers} stages, got {stages}")
    bounds = [i * num_layers // stages for i in range(stages + 1)]
    return tuple(b - a for a, b in zip(bounds, bounds[1:]))


def activation_hop_bytes(tokens, hidden_size: int):
    """Bytes one stage boundary carries for a micro-batch of `tokens` tokens: one BF16 hidden
    vector per token (`tokens × hidden × 2 B`, issue 10 item 1). Under tensor parallelism every
    GPU of a stage holds the whole (all-reduced) hidden state and sends it to its counterpart of
    the next stage over its own link, so the hop takes the time of one such message."""
    return tokens * hidden_size * DTYPE_BYTES


def hop_time(comm: CommModel, tokens, hidden_size: int, same_node: bool = True):
    """Seconds of one activation hop, from the measured GPU-to-GPU send/recv curve (0 tokens
    cost 0). `same_node`: the two stages' GPUs share a node (NVLink) or not."""
    return comm.send_recv(activation_hop_bytes(tokens, hidden_size), same_node)


def stage_times(timer: IterationTimeModel, layers: Sequence[int], prefill_tokens, prefill_attention_work,
                decode_seqs, decode_context) -> list:
    """Seconds of each stage for one micro-batch (arguments as `IterationTimeModel.iteration_time`;
    scalars or numpy arrays). The LM head runs on the last stage only."""
    last = len(layers) - 1
    return [timer.stage_time(n, i == last, prefill_tokens, prefill_attention_work, decode_seqs, decode_context)
            for i, n in enumerate(layers)]


def micro_batch_time(timer: IterationTimeModel, comm: CommModel, layers: Sequence[int], prefill_tokens,
                     prefill_attention_work, decode_seqs, decode_context, same_node: bool = True):
    """Seconds from a micro-batch entering stage 0 to its tokens leaving the last stage on an idle
    pipeline: the sum of its stage times plus one activation hop per stage boundary (issue 10
    item 1). Summed stage by stage, then the hops, so a scalar call and an array call agree bit
    for bit."""
    total = 0.0
    for seconds in stage_times(timer, layers, prefill_tokens, prefill_attention_work, decode_seqs, decode_context):
        total = total + seconds
    tokens = prefill_tokens + decode_seqs
    hop = hop_time(comm, tokens, timer.model.hidden_size, same_node)
    for _ in range(len(layers) - 1):
        total = total + hop
    return total


def pipeline_round(stage_seconds: Sequence[Sequence[float]], hop_seconds: Sequence[float],
                   ready: Sequence[float], stage_free: Sequence[float]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """One iteration of every micro-batch under the module's in-order schedule.

    stage_seconds[m][i]: micro-batch m's time on stage i; hop_seconds[m]: its time per stage
    boundary; ready[m]: when it may enter stage 0; stage_free[i]: when stage i is free.
    Returns (when each micro-batch leaves the last stage, when each stage is free again): chain
    rounds by passing them back as `ready` and `stage_free`.
    """
    free = list(stage_free)
    if len(ready) != len(stage_seconds) or len(hop_seconds) != len(stage_seconds):
        raise ConfigError("pipeline_round needs one ready time and one hop time per micro-batch")
    finish = []
    for stages, hop, t in zip(stage_seconds, hop_seconds, ready):
        if len(stages) != len(free):
            raise ConfigError(f"a micro-batch needs one time per stage ({len(free)}), got {len(stages)}")
        for i, seconds in enumerate(stages):
            if i:
                t = t + hop
            t = max(t, free[i]) + seconds
            free[i] = t
        finish.append(t)
    return tuple(finish), tuple(free)


def cycle_time(stage_seconds: Sequence[Sequence[float]], hop_seconds: Sequence[float]) -> float:
    """Steady-state seconds per round (every micro-batch advancing one iteration) of the module's
    schedule, bubbles included: the max-plus eigenvalue of the round map.

    `pipeline_round` is max-plus linear in (ready, stage_free), so each round is x ← A ⊗ x and
    the long-run period is A's largest mean cycle weight (Karp's algorithm, n = micro-batches +
    stages). It is at least both the busiest stage's work (Σ_m s[m][i]) and every micro-batch's
    own latency (Σ_i s[m][i] + (g−1)·hop[m]); with M equal micro-batches of stage time s on g
    stages it is max(M·s, g·s + (g−1)·hop).
    """
    m, g = len(stage_seconds), len(stage_seconds[0]) if stage_seconds else 0
    n = m + g
    if m == 0 or g == 0:
        raise ConfigError("cycle_time needs at least one micro-batch and one stage")
    # column k of A: the round's outputs when only input k is finite (at 0)
    columns = []
    for k in range(n):
        x = [_NEVER] * n
        x[k] = 0.0
        finish, free = pipeline_round(stage_seconds, hop_seconds, x[:m], x[m:])
        columns.append(finish + free)
    weight = [[columns[k][j] for k in range(n)] for j in range(n)]  # weight[j][k]: arc k -> j
    walks = [[0.0] * n]  # walks[t][v]: heaviest walk of exactly t arcs ending at v (start anywhere)
    for _ in range(n):
        last = walks[-1]
        walks.append([max(last[u] + weight[v][u] for u in range(n)) for v in range(n)])
    best = _NEVER
    for v in range(n):
        if walks[n][v] == _NEVER:
            continue
        worst = min((walks[n][v] - walks[t][v]) / (n - t) for t in range(n) if walks[t][v] != _NEVER)
        best = max(best, worst)
    return best


def bubble_seconds(stage_seconds: Sequence[Sequence[float]], hop_seconds: Sequence[float]) -> tuple[float, ...]:
    """Idle seconds of each stage per steady-state round: cycle time minus the stage's work
    (never negative; the busiest stage, when it sets the period, has none up to rounding)."""
    period = cycle_time(stage_seconds, hop_seconds)
    return tuple(max(0.0, period - sum(row[i] for row in stage_seconds)) for i in range(len(stage_seconds[0])))
