"""Checks that need more than one part of a scenario: can it run, and is it the size it says?

Each field is bounded on its own by the schema; these checks combine them, before anything
runs: the GPUs and model exist, the tensor-parallel degree is one vLLM can shard the model
over within one node, the model fits its GPUs, the workload's volume and the run's length stay
within :mod:`chironsim.limits` (timeseries samples and policy ticks included), and every
class with traffic has some pool that can ever serve it. Each problem is ``(key path, what is
wrong)``, located by the caller.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from chironsim.catalog import get_gpu, get_model
from chironsim.config_base import number_text
from chironsim.errors import ChironError
from chironsim.experiments.messages import KeyPath, dotted
from chironsim.limits import MAX_PERIODIC_EVENTS, MAX_TIMESERIES_ROWS
from chironsim.perf.memory import kv_capacity_blocks
from chironsim.perf.precision import Precision
from chironsim.sim.config import ClusterConfig
from chironsim.workload.volume import workload_problems

if TYPE_CHECKING:
    from chironsim.experiments.config import ScenarioConfig

Problem = tuple[KeyPath, str]
_GIB = 2**30


def feasibility_problems(config: ScenarioConfig) -> list[Problem]:
    """Every problem below, in config order (hardware, then volume, then capacity)."""
    return hardware_problems(config.cluster) + volume_problems(config) + capacity_problems(config)


def hardware_problems(cluster: ClusterConfig) -> list[Problem]:
    """Unknown GPU or model names, tensor-parallel degrees the model or node cannot take, FP8
    weights on a GPU without FP8 tensor cores, and pools whose model leaves no room for a KV
    block (at the pool's weight and KV-cache dtypes).

    The fit check is the one the cluster makes when it builds the pool (same engine settings),
    done here so that it fails before the run rather than when the simulation starts.
    """
    problems: list[Problem] = []

    def look_up(get: Callable[[str], Any], name: str, key: KeyPath) -> Any:
        try:
            return get(name)
        except ChironError as err:
            problems.append((key, str(err)))
            return None

    default_gpu = look_up(get_gpu, cluster.gpu, ("cluster", "gpu"))
    default_model = look_up(get_model, cluster.model, ("cluster", "model"))
    for name, pool in cluster.pools.items():
        key: KeyPath = ("cluster", "pools", name)
        gpu = look_up(get_gpu, pool.gpu, (*key, "gpu")) if pool.gpu else default_gpu
        model = look_up(get_model, pool.model, (*key, "model")) if pool.model else default_model
        if gpu is None or model is None:
            continue
        allowed = model.tp_degrees(gpu.gpus_per_node)
        if pool.tp not in allowed:
            problems.append(((*key, "tp"), _tp_problem(pool.tp, model, gpu, allowed)))
            continue
        precision = Precision(*cluster.precision_of(name))
        why = precision.problem(gpu)
        if why is not None:
            problems.append(((*key, "dtype") if pool.dtype else ("cluster", "dtype"), why))
            continue
        engine = pool.engine or cluster.engine
        reserve = None if engine.activation_reserve_gb is None else int(engine.activation_reserve_gb * _GIB)
        try:
            kv_capacity_blocks(model, gpu, pool.tp, engine.gpu_memory_utilization,
                               engine.block_size, reserve, precision)
        except ChironError as err:
            problems.append((key, str(err)))
    return problems


def _tp_problem(tp: int, model: Any, gpu: Any, allowed: list[int]) -> str:
    if tp > gpu.gpus_per_node:
        why = f"an instance cannot span nodes, and one {gpu.name} node holds {gpu.gpus_per_node} GPUs"
    elif model.num_heads % tp:
        why = f"it must divide {model.name}'s {model.num_heads} attention heads"
    else:
        why = (f"{model.name}'s {model.num_kv_heads} KV heads must split evenly over it or "
               "be replicated evenly (kv_heads % tp == 0 or tp % kv_heads == 0)")
    shown = str(tp) if tp < 10**6 else f"{tp:.3g}"
    return (f"tensor-parallel degree {shown} is not possible: {why}; allowed on "
            f"{gpu.name}: {', '.join(map(str, allowed))}")


def volume_problems(config: ScenarioConfig) -> list[Problem]:
    """Streams that generate too much, and runs with too many samples or policy ticks.

    A count that is too large is located at the interval when the file sets it, else at what
    made the run long (``duration_s`` or the stream that ends last).
    """
    problems, workload_end = workload_problems(config.workload, config.duration_s)
    if config.duration_s is not None:
        horizon, what, long_key = config.duration_s + config.drain_s, "duration_s + drain_s", ("duration_s",)
    elif workload_end is not None:
        end, stream = workload_end
        horizon, what = end + config.drain_s, "the workload's expected end + drain_s"
        long_key = ("workload", "streams", stream)
    else:
        return problems  # a trace sets the length; only the per-field floors apply
    policy = config.policy
    pools = len(config.cluster.pools)
    per_pool = MAX_TIMESERIES_ROWS // pools
    periodic = [(("sample_interval_s",), config.sample_interval_s, "timeseries samples per pool",
                 "sample_interval_s" in config.model_fields_set, per_pool,
                 f" ({number_text(MAX_TIMESERIES_ROWS)} rows over {pools} pools)" if pools > 1 else "")]
    ticks = getattr(policy, "tick_intervals", dict)()  # {} for a policy registered elsewhere
    periodic += [(("policy", key), interval, "policy ticks", key in policy.model_fields_set,
                  MAX_PERIODIC_EVENTS, "")
                 for key, interval in ticks.items()]
    for key, interval, counted, explicit, most, why in periodic:
        count = horizon / interval
        if count > most:
            least = horizon / most
            problems.append((key if explicit else long_key,
                             f"{number_text(math.ceil(count))} {counted} ({dotted(key)} = "
                             f"{interval:g} s over the run's {number_text(round(horizon))} s, "
                             f"{what}); at most {number_text(most)}{why}: set {dotted(key)} to "
                             f"at least {least:.3g} s or shorten the run"))
    return problems


def capacity_problems(config: ScenarioConfig) -> list[Problem]:
    """Classes with traffic whose every pool starts empty and can never grow.

    Such a class's requests would all end 'unfinished' with no event saying why: under a
    policy that never adds instances (static), a pool with ``instances: 0`` serves nothing.
    Pools an autoscaler sizes can start from zero (unless their ``max_instances`` is 0).
    """
    pools = config.cluster.pools
    declared = getattr(config.policy, "growable_pools", None)  # a policy registered elsewhere
    growable = set(pools) if declared is None else declared(list(pools))
    problems: list[Problem] = []
    reported: set[str] = set()
    for i, stream in enumerate(config.workload.streams):
        cls = stream.request_class
        serving = [n for n, p in pools.items() if p.classes is None or cls in p.classes]
        if cls in reported or not serving or any(
                pools[n].instances > 0 or (n in growable and pools[n].max_instances > 0)
                for n in serving):
            continue  # no pool at all is reported at run time as a rejection, with its reason
        reported.add(cls)
        why = (f"policy {config.policy.kind!r} never adds instances" if not growable
               else "their max_instances or the policy keep them empty")
        problems.append((("cluster", "pools", serving[0], "instances"),
                         f"class {cls!r} ({dotted(('workload', 'streams', i))}) would never be "
                         f"served: the pools that serve it ({', '.join(serving)}) start with 0 "
                         f"instances and {why}; give one at least 1 instance, or let an "
                         "autoscaler (reactive, chiron, llumnix with scaling) size it"))
    return problems
