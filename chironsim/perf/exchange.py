"""Durations of a fused group's data movement: KV exchange of stale requests, parameter restore.

Issue 10 item 1; reference/README.md, KunServe, "KV exchange" and "Restore"; evidence in
reference/llumnix_kunserve.md B.1 (what the code does, step 4, and the execution cost model).

- KV exchange: a request that was running on member j when the group formed ("stale") holds its
  KV for all L layers there; after the drop every other member needs its own layers' share, so
  member j sends T·κ·(g−1)/g bytes (T tokens, κ KV bytes per token). Requests are exchanged at
  most `exchange_batch_size` (8, the released code's default, B.2) per pipeline step. The same
  bytes move to convert a pipelined request back to one member when the group restores
  (`restore_batch_size`, also 8).
- Restore: every GPU reloads the L − L_i layers it dropped (L·(g−1)/g when g divides L) from
  the peers that kept them: `layers × (g−1)/g × layer bytes ÷ link bandwidth` in the code's
  comment (B.1).

Both are priced by the measured GPU-to-GPU send/recv curve (chironsim.perf.comm), per GPU:
under tensor parallelism each GPU holds 1/tp of the weights and its own KV heads, and moves
them over its own link at the same time as the other GPUs of its member, so a transfer takes
the time of one GPU's share. A step's exchange is priced as one message of the batch's summed
bytes (the code sends them inside one NCCL group): one latency per step, not per request.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from chironsim.catalog.specs import Model
from chironsim.errors import ConfigError
from chironsim.perf.comm import CommModel
from chironsim.perf.drop import layer_weight_bytes
from chironsim.perf.pipeline import stage_layers
from chironsim.perf.precision import BF16, Precision

#: requests exchanged (or converted back) per pipeline step: the released code's
#: exchange_batch_size and restore_batch_size (reference/llumnix_kunserve.md B.2)
EXCHANGE_BATCH_SIZE = 8


def kv_bytes_per_token_per_gpu(model: Model, tp: int, precision: Precision = BF16) -> int:
    """κ of one GPU: K and V of every layer for the KV heads that GPU holds (replicated when tp
    exceeds the KV heads, as chironsim.perf.memory counts them), at the KV cache's element size."""
    return 2 * model.num_layers * model.kv_heads_per_gpu(tp) * model.head_dim * precision.kv_bytes


def kv_exchange_bytes(tokens, kv_bytes_per_token: float, group_size: int):
    """T·κ·(g−1)/g: the bytes a stale request of T tokens sends to its peers."""
    if group_size < 1:
        raise ConfigError(f"group_size must be >= 1, got {group_size}")
    return tokens * kv_bytes_per_token * (group_size - 1) / group_size


def exchange_batches(tokens: Iterable[int], batch_size: int = EXCHANGE_BATCH_SIZE) -> list[tuple[int, ...]]:
    """The stale requests' token counts in the order given, cut into steps of at most
    `batch_size` requests (the order is the caller's: the code takes its stale list in order)."""
    if batch_size < 1:
        raise ConfigError(f"exchange batch size must be >= 1, got {batch_size}")
    items = list(tokens)
    return [tuple(items[i:i + batch_size]) for i in range(0, len(items), batch_size)]


def kv_exchange_seconds(comm: CommModel, model: Model, tp: int, group_size: int, tokens: Sequence[int],
                        same_node: bool = True, batch_size: int = EXCHANGE_BATCH_SIZE,
                        precision: Precision = BF16) -> float:
    """Seconds of one exchange step moving the stale requests of `tokens` tokens each (one
    batch of at most `batch_size`; `exchange_batches` cuts them): one send/recv of
    Σ T·κ_gpu·(g−1)/g bytes per GPU."""
    if len(tokens) > batch_size:
        raise ConfigError(f"one exchange step moves at most {batch_size} requests, got {len(tokens)}")
    total = kv_exchange_bytes(sum(tokens), kv_bytes_per_token_per_gpu(model, tp, precision), group_size)
    return comm.send_recv(total, same_node)


def restore_bytes_per_gpu(model: Model, tp: int, group_size: int,
                          precision: Precision = BF16) -> tuple[float, ...]:
    """Bytes each member's GPUs reload: the (L − L_i) dropped layers, 1/tp of each."""
    layer = layer_weight_bytes(model, precision) / tp
    return tuple((model.num_layers - kept) * layer for kept in stage_layers(model.num_layers, group_size))


def restore_seconds(comm: CommModel, model: Model, tp: int, group_size: int, same_node: bool = True,
                    precision: Precision = BF16) -> float:
    """Seconds until every member holds all L layers again: the slowest member's reload of its
    dropped layers from its peers over its link (the members reload at the same time)."""
    return max(comm.send_recv(b, same_node) for b in restore_bytes_per_gpu(model, tp, group_size, precision))
