"""The cluster: pools of instances, routing, cold starts, and applying policy actions.

The cluster is the only place where policies meet the simulation: it builds frozen views for
them and turns the actions they return into lifecycle changes, logging each as an event.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

import simpy

from chironsim.catalog import GPU, Model, get_gpu, get_model
from chironsim.limits import MAX_GROUP_SIZE
from chironsim.metrics.records import InstanceRecord
from chironsim.perf.drop import fused_kv_capacity_blocks
from chironsim.perf.efficiency import comm_for_gpu
from chironsim.perf.exchange import kv_exchange_seconds, restore_seconds
from chironsim.perf.memory import kv_block_bytes, kv_capacity_blocks
from chironsim.perf.precision import BF16, Precision, model_weight_bytes
from chironsim.perf.roofline import IterationTimeModel
from chironsim.perf.transfer import KVCopy, swap_time
from chironsim.contract.actions import Action
from chironsim.contract.protocols import Router
from chironsim.contract.states import DRAINING, LOADING, PROVISIONING, READY
from chironsim.contract.views import ClusterView, PoolView, RequestView
from chironsim.sim import request as rq
from chironsim.sim.actions import applier_for
from chironsim.sim.config import ClusterConfig, EngineConfig, MigrationConfig, PoolConfig
from chironsim.sim.events import (
    INSTANCE_READY, INSTANCE_STOPPED, REJECT, SCALE_DOWN, SCALE_UP, EventKind, EventLog,
)
from chironsim.sim.global_queue import GlobalQueue
from chironsim.sim.instance import Instance
from chironsim.sim.mechanisms.eviction import PriorityEviction
from chironsim.sim.mechanisms.fusion import FusionCoordinator, comm_of, same_node
from chironsim.sim.mechanisms.microbatch import MicroBatchQueues
from chironsim.sim.mechanisms.migration import MigrationCoordinator
from chironsim.sim.request import Request
from chironsim.sim.routing import LiveInstanceView
from chironsim.sim.weight_store import WeightStore

GIB = 1024**3


def migration_copy(settings: MigrationConfig, gpu: GPU, block_bytes: float, tp: int) -> KVCopy:
    """How a migration stage's blocks travel: at the gloo backend's bandwidth, or at the GPU's
    measured NCCL send/recv curve (between nodes: as measured; on one node: re-targeted to
    its NVLink like every intra-node curve)."""
    if settings.backend == "gloo":
        return KVCopy(block_bytes, tp, bandwidth=settings.bandwidth_gbps * 1e9)
    same_node = settings.nccl_path == "nvlink"
    return KVCopy(block_bytes, tp, comm=comm_for_gpu(gpu, retarget=same_node), same_node=same_node)


@dataclass
class PoolSpec:
    """A pool's resolved hardware, model and engine; what every instance in it is built from."""

    name: str
    config: PoolConfig
    gpu: GPU
    model: Model
    tp: int
    engine: EngineConfig
    iteration_time: Callable
    kv_capacity_blocks: int
    host_capacity_blocks: int
    swap_seconds_per_block: float
    remote_seconds_per_block: float
    migration_copy: KVCopy  # seconds of a migration stage's block copy (perf/transfer.py)
    timer: IterationTimeModel | None = None  # the roofline behind iteration_time
    precision: Precision = BF16  # weight and KV-cache dtypes (chironsim/perf/precision.py)
    weight_bytes: int = 0  # all the replica's weights at its precision: what a cold start loads

    @classmethod
    def resolve(cls, name: str, pool: PoolConfig, cluster: ClusterConfig,
                engine_settings: Mapping[str, object] = MappingProxyType({})) -> "PoolSpec":
        """``engine_settings``: what the policy needs on every engine (the bundle's), laid
        over the pool's engine config and validated like it."""
        gpu = get_gpu(pool.gpu or cluster.gpu)
        model = get_model(pool.model or cluster.model)
        engine = pool.engine or cluster.engine
        if engine_settings:
            engine = EngineConfig.model_validate({**engine.model_dump(), **engine_settings})
        reserve = None if engine.activation_reserve_gb is None else engine.activation_reserve_gb * GIB
        precision = Precision(pool.dtype or cluster.dtype, pool.kv_cache_dtype or cluster.kv_cache_dtype)
        capacity = kv_capacity_blocks(
            model, gpu, pool.tp, engine.gpu_memory_utilization, engine.block_size, reserve, precision
        )
        block_bytes = kv_block_bytes(model, engine.block_size, pool.tp, precision)
        host_blocks = int(engine.swap_space_gb * GIB * pool.tp // block_bytes)
        perf = IterationTimeModel(model, gpu, pool.tp, precision=precision,
                                  overhead=engine.overhead_model())  # the engine preset's
        # Saved KV moved from another instance's host: the slower of the network and PCIe.
        remote_bw = min(cluster.kv_transfer_gbps * 1e9, gpu.host_link_bytes_per_s * pool.tp)
        return cls(
            name=name, config=pool, gpu=gpu, model=model, tp=pool.tp, engine=engine,
            iteration_time=perf.iteration_time, timer=perf, kv_capacity_blocks=capacity,
            host_capacity_blocks=host_blocks,
            swap_seconds_per_block=swap_time(1, block_bytes, gpu, pool.tp),
            remote_seconds_per_block=block_bytes / remote_bw,
            migration_copy=migration_copy(cluster.migration, gpu, block_bytes, pool.tp),
            precision=precision, weight_bytes=model_weight_bytes(model, precision),
        )


class Cluster:
    """Pools of instances behind a router, scaled by the policy's actions."""

    def __init__(
        self,
        env: simpy.Environment,
        config: ClusterConfig,
        router: Router,
        on_request_done: Callable[[Request, str, str], None],
        events: EventLog,
        queued_classes: frozenset[str] = frozenset(),
        evicting_pools: frozenset[str] = frozenset(),
        engine_settings: Mapping[str, object] = MappingProxyType({}),
    ) -> None:
        self.env = env
        self.config = config
        self.router = router
        self._on_request_done = on_request_done
        self.events = events
        self.pools: dict[str, PoolSpec] = {
            name: PoolSpec.resolve(name, pool, config, engine_settings)
            for name, pool in config.pools.items()
        }
        self.instances: dict[str, list[Instance]] = {name: [] for name in self.pools}
        self.queues: dict[str, deque[Request]] = {name: deque() for name in self.pools}
        self.instance_records: list[InstanceRecord] = []
        # output tokens of the instances already stopped, per pool (live ones report their own)
        self.stopped_tokens: dict[str, int] = {name: 0 for name in self.pools}
        self.store = WeightStore(env, config.lifecycle.load_bandwidth_gbps * 1e9)
        self._loads: dict[str, simpy.Event] = {}  # weight loads in progress, by instance
        self._by_id: dict[str, Instance] = {}
        # What routers are handed for each instance: made once, read live (see .routing)
        self._live: dict[str, LiveInstanceView] = {}
        self._gains: dict[str, tuple[int, ...]] = {}  # pool -> _fusion_gains
        self._counter = 0
        self._class_pools: dict[str, list[str]] = {}
        # Pools whose instances evict lower-priority work for a higher-priority head: the
        # policy's own need (evicting_pools) or the user's pool option.
        eviction = PriorityEviction(self.submit)
        self._mechanisms = {
            name: (eviction,) if name in evicting_pools or spec.config.evict_lower_priority else ()
            for name, spec in self.pools.items()
        }
        self.migrations = MigrationCoordinator(
            env, events, config.migration,
            copy_seconds=lambda inst, blocks: self.pools[inst.pool].migration_copy.seconds(blocks),
            compatible=lambda a, b: self.pools[a.pool].model == self.pools[b.pool].model)
        self.fusion = FusionCoordinator(
            env, events, fused_blocks=self._fused_blocks, pipelined_time=self._pipelined_time,
            restore_seconds=self._restore_seconds, exchange_seconds=self._exchange_seconds,
            place=self.submit, settings=config.fusion)
        self.global_queues = {cls: GlobalQueue(cls) for cls in sorted(queued_classes)}
        self.backlog = 0  # requests in global queues; instances ask for refills while > 0
        self.held = 0  # requests in pool queues (nothing ready, or the router declined)
        self._pool_queued_classes = {
            name: [q for q in self.global_queues
                   if spec.config.classes is None or q in spec.config.classes]
            for name, spec in self.pools.items()
        }
        for name, spec in self.pools.items():
            for _ in range(spec.config.instances):
                self._new_instance(name).start()

    # --- instances ------------------------------------------------------------------------
    def _new_instance(self, pool: str) -> Instance:
        spec = self.pools[pool]
        instance_id = f"{pool}-{self._counter}"
        self._counter += 1
        inst = Instance(
            self.env, self, instance_id, pool, spec.engine, spec.iteration_time,
            spec.kv_capacity_blocks, spec.host_capacity_blocks, spec.swap_seconds_per_block,
            spec.model.max_context, spec.tp,
            mechanisms=self._mechanisms[pool],
            remote_seconds_per_block=spec.remote_seconds_per_block,
        )
        self.instances[pool].append(inst)
        self._by_id[instance_id] = inst
        self._live[instance_id] = LiveInstanceView(inst)
        return inst

    # --- fused groups (KunServe's parameter drop, .mechanisms.fusion) ------------------------
    def _fused_blocks(self, leader: Instance, group_size: int) -> int:
        return self._fused_blocks_of(leader.pool, group_size)

    def _fused_blocks_of(self, pool: str, group_size: int) -> int:
        spec = self.pools[pool]
        engine = spec.engine
        reserve = None if engine.activation_reserve_gb is None else engine.activation_reserve_gb * GIB
        return fused_kv_capacity_blocks(spec.model, spec.gpu, spec.tp, group_size,
                                        engine.gpu_memory_utilization, engine.block_size, reserve,
                                        spec.precision)

    def _fusion_gains(self, pool: str) -> tuple[int, ...]:
        """Blocks a fused group of g gains over its members' own, g = 2 … min(L, MAX_GROUP_SIZE)
        (index g − 2), computed once per pool: a drop plan's weights, carried by its views."""
        gains = self._gains.get(pool)
        if gains is None:
            spec = self.pools[pool]
            before = spec.kv_capacity_blocks
            largest = min(spec.model.num_layers, MAX_GROUP_SIZE)
            gains = self._gains[pool] = tuple(
                self._fused_blocks_of(pool, g) - g * before for g in range(2, largest + 1))
        return gains

    def _pipelined_time(self, leader: Instance, group_size: int) -> Callable:
        spec = self.pools[leader.pool]
        return MicroBatchQueues(spec.timer, comm_of(spec.timer), group_size,
                                same_node(spec.gpu.gpus_per_node, spec.tp, group_size), leader)

    def _restore_seconds(self, leader: Instance, group_size: int) -> float:
        spec = self.pools[leader.pool]
        return float(restore_seconds(comm_of(spec.timer), spec.model, spec.tp, group_size,
                                     same_node(spec.gpu.gpus_per_node, spec.tp, group_size),
                                     spec.precision))

    def _exchange_seconds(self, leader: Instance, group_size: int, tokens: list[int],
                          batch_size: int) -> float:
        spec = self.pools[leader.pool]
        return float(kv_exchange_seconds(comm_of(spec.timer), spec.model, spec.tp, group_size, tokens,
                                         same_node(spec.gpu.gpus_per_node, spec.tp, group_size),
                                         batch_size, spec.precision))

    def _cold_start(self, inst: Instance) -> simpy.events.Process:
        def lifecycle():
            life = self.config.lifecycle
            yield self.env.timeout(life.provision_s)
            if inst.state != PROVISIONING:
                return
            inst.set_loading()
            load = self.store.load(self.pools[inst.pool].weight_bytes)
            self._loads[inst.instance_id] = load
            loaded = yield load
            del self._loads[inst.instance_id]
            if loaded is False:  # stopped while loading: the store cancelled the load
                return
            yield self.env.timeout(life.engine_startup_s)
            if inst.state != LOADING:
                return
            inst.start()
            self.events.emit(INSTANCE_READY, inst.pool, inst.instance_id, -1, "cold start done")
            self._retry_held()
        return self.env.process(lifecycle())

    def instance_stopped(self, inst: Instance) -> None:
        """Bill the instance, give back its weight-load bandwidth if it was loading, forget it."""
        spec = self.pools[inst.pool]
        load = self._loads.get(inst.instance_id)
        if load is not None:
            self.store.cancel(load)
        self.instances[inst.pool].remove(inst)
        del self._by_id[inst.instance_id]
        del self._live[inst.instance_id]
        record = self._record(inst, spec, inst.stop_time)
        self.instance_records.append(record)
        self.stopped_tokens[inst.pool] += record.tokens_generated
        self.events.emit(INSTANCE_STOPPED, inst.pool, inst.instance_id, -1, "drained")

    def _record(self, inst: Instance, spec: PoolSpec, stop: float) -> InstanceRecord:
        return InstanceRecord(
            instance_id=inst.instance_id, pool=inst.pool, gpu=spec.gpu.name,
            model=spec.model.name, tp=spec.tp, num_gpus=spec.tp,
            provision_time=inst.provision_time, ready_time=inst.ready_time,
            drain_time=inst.drain_time, stop_time=stop,
            gpu_seconds=(stop - inst.provision_time) * spec.tp,
            tokens_prefilled=inst.tokens_prefilled, tokens_generated=inst.tokens_generated,
            requests_finished=inst.requests_finished, iterations=inst.step,
            busy_seconds=inst.busy_seconds,
        )

    def live_instances(self) -> list[Instance]:
        return [inst for pool in self.instances.values() for inst in pool]

    # --- requests -------------------------------------------------------------------------
    def pools_for(self, request_class: str) -> list[str]:
        pools = self._class_pools.get(request_class)
        if pools is None:
            pools = [n for n, s in self.pools.items()
                     if s.config.classes is None or request_class in s.config.classes]
            self._class_pools[request_class] = pools
        return pools

    def submit(self, req: Request) -> None:
        """Route an arriving request, or hold it in its pool's queue until an instance is ready."""
        pools = self.pools_for(req.request_class)
        if not pools:
            self.request_done(req, "rejected", f"no pool serves class {req.request_class!r}")
            return
        queue = self.global_queues.get(req.request_class)
        if queue is not None:
            self._enqueue_global(req, queue, pools)
            return
        if self.held:  # requests held earlier go first (FIFO), now that time has passed
            self._retry_held()
        self._try_place(req, pools)

    def _try_place(self, req: Request, pools: list[str], arriving: bool = True) -> None:
        """Place ``req`` on a ready instance of ``pools`` that the router picks, or hold it
        in the first pool's queue (nothing ready, or the router declined).

        A pool's ``max_queue`` refuses an *arriving* request where it would wait behind that
        many (the picked instance's waiting queue, or the pool's own); a held request that is
        retried was already taken, so a full instance sends it back to the pool's queue."""
        live = self._live
        candidates = [live[inst.instance_id] for p in pools for inst in self.instances[p]
                      if inst.state == READY]
        if candidates:
            chosen = self.router.route(self._request_view(req), candidates)
            if chosen is not None:
                inst = self._by_id[chosen]
                bound = self.pools[inst.pool].config.max_queue
                if bound is None or len(inst.waiting) < bound:
                    inst.enqueue(req)
                    return
                if arriving:
                    self.request_done(req, "rejected", f"queue full: {bound} waiting at {chosen} "
                                      f"(pool {inst.pool} max_queue)")
                    return
        bound = self.pools[pools[0]].config.max_queue
        if arriving and bound is not None and len(self.queues[pools[0]]) >= bound:
            self.request_done(req, "rejected", f"queue full: {bound} held at pool {pools[0]} "
                              "(max_queue)")
            return
        req.phase = rq.QUEUED
        self.queues[pools[0]].append(req)
        self.held += 1

    def _retry_held(self) -> None:
        """Give each request held in a pool queue one more placement attempt, oldest first.

        Called when capacity may have appeared: an instance became ready, a request finished,
        a policy acted, or another request arrived. A request the router declines again goes
        back to the end of its queue.
        """
        for queue in self.queues.values():
            for _ in range(len(queue)):
                req = queue.popleft()
                self.held -= 1
                self._try_place(req, self.pools_for(req.request_class), arriving=False)

    # --- cluster-level (global) queues ----------------------------------------------------
    def _enqueue_global(self, req: Request, queue: GlobalQueue, pools: list[str]) -> None:
        """Hold ``req`` in its class's EDF queue; place it at once if some instance has room.

        While the queue is non-empty no instance serving the class has room (each one refills
        itself whenever it gains room, at its next iteration boundary), so only an arrival to an
        empty queue needs to look for an instance.
        """
        req.phase = rq.QUEUED
        was_empty = len(queue) == 0
        queue.push(req)
        self.backlog += 1
        if not was_empty:
            return
        live = self._live
        while len(queue):
            head = queue.head()
            candidates = [live[inst.instance_id] for p in pools for inst in self.instances[p]
                          if inst.room_for(head)]
            if not candidates:
                return
            chosen = self.router.route(self._request_view(head), candidates)
            if chosen is None:
                return
            queue.pop()
            self.backlog -= 1
            self._by_id[chosen].enqueue(head)

    def refill(self, inst: Instance) -> None:
        """``inst`` is at an iteration boundary: let it pull queued work it has room for."""
        for cls in self._pool_queued_classes[inst.pool]:
            queue = self.global_queues[cls]
            while len(queue) and inst.room_for(queue.head()):
                self.backlog -= 1
                inst.enqueue(queue.pop())

    @staticmethod
    def _request_view(req: Request) -> RequestView:
        return RequestView(req.request_id, req.request_class, req.priority,
                           req.prompt_tokens, req.output_tokens, req.arrival)

    def request_done(self, req: Request, status: str, reason: str = "") -> None:
        if self.held and req.instance is not None:  # a seat and its KV came free
            self._retry_held()
        if status == "rejected":
            self.events.emit(REJECT, req.instance.pool if req.instance else "",
                             req.instance.instance_id if req.instance else "", req.request_id,
                             reason)
        self._on_request_done(req, status, reason)

    def log_event(self, kind: EventKind, inst: Instance, req: Request | None, reason: str) -> None:
        self.events.emit(kind, inst.pool, inst.instance_id,
                         -1 if req is None else req.request_id, reason)

    def instance(self, instance_id: str) -> Instance | None:
        """The live instance with this id, or None once it has stopped."""
        return self._by_id.get(instance_id)

    # --- policy interface -----------------------------------------------------------------
    def view(self) -> ClusterView:
        now = self.env.now
        pools = {}
        for name, spec in self.pools.items():
            pools[name] = PoolView(
                name=name,
                instances=tuple(inst.view(now) for inst in self.instances[name]),
                queued=len(self.queues[name]),
                min_instances=spec.config.min_instances,
                max_instances=spec.config.max_instances,
                fusion_gain_blocks=self._fusion_gains(name),
            )
        queues = {cls: queue.view() for cls, queue in self.global_queues.items()}
        return ClusterView(time=now, pools=pools, queues=queues)

    def load_view(self) -> ClusterView:
        """A poller's view: every instance's :class:`LoadReport` and the pools' bounds, and
        no instance views (polling 20 times a simulated second must stay cheap)."""
        now = self.env.now
        out, into = self.migrations.out_count, self.migrations.in_count
        pools = {}
        for name, spec in self.pools.items():
            if out or into:
                reports = tuple([inst.load_report(now, out.get(inst.instance_id, 0),
                                                  into.get(inst.instance_id, 0))
                                 for inst in self.instances[name]])
            else:  # no migration under way (the usual poll): no look-ups
                reports = tuple([inst.load_report(now) for inst in self.instances[name]])
            pools[name] = PoolView(name=name, instances=(), queued=len(self.queues[name]),
                                   min_instances=spec.config.min_instances,
                                   max_instances=spec.config.max_instances, load=reports,
                                   fusion_gain_blocks=self._fusion_gains(name))
        return ClusterView(time=now, pools=pools)

    def apply(self, actions: Sequence[Action]) -> None:
        """Apply each action with the code registered for its type (:mod:`.actions`)."""
        for action in actions:
            applier_for(action)(self, action)
        if self.held and actions:
            self._retry_held()

    def scale_to(self, pool: str, instances: int, reason: str) -> None:
        """Bring the pool's active (not draining) instances to the requested count.

        ``max_instances`` is a budget of GPUs held, so instances still draining count
        against it: a scale-up while others drain launches only what fits beside them
        (the rest of the request is dropped; the policy asks again on its next tick).
        A scale-down compares against the active instances alone, so draining ones never
        cause more instances to be drained.
        """
        spec = self.pools[pool]
        target = min(max(instances, spec.config.min_instances), spec.config.max_instances)
        active = [i for i in self.instances[pool] if i.state in (PROVISIONING, LOADING, READY)]
        if target > len(active):
            draining = sum(1 for i in self.instances[pool] if i.state == DRAINING)
            reachable = min(target, spec.config.max_instances - draining)
            for _ in range(reachable - len(active)):
                inst = self._new_instance(pool)
                self.events.emit(SCALE_UP, pool, inst.instance_id, -1, reason,
                                 f"{len(active)}->{reachable}")
                self._cold_start(inst)
        elif target < len(active):
            # Cancel cold starts first (cheapest), then drain the least loaded ready instances.
            order = sorted(active, key=lambda i: (i.state == READY, i.held_count,
                                                  -i.provision_time))
            if self.fusion.groups:  # a fused group's members leave it only by restore
                order = [i for i in order if not self.fusion.holds(i)]
            for inst in order[: len(active) - target]:
                self.events.emit(SCALE_DOWN, pool, inst.instance_id, -1, reason,
                                 f"{len(active)}->{target}")
                inst.drain()

    # --- end of run -----------------------------------------------------------------------
    def finalize(self, end: float) -> list[Request]:
        """Bill live instances up to ``end`` and return every request still held anywhere."""
        held: list[Request] = []
        for pool, queue in self.queues.items():
            held.extend(queue)
        for queue in self.global_queues.values():
            held.extend(queue.drain())
        self.backlog = 0
        self.migrations.close()
        held.extend(self.migrations.in_transfer.values())  # stopped, their copy under way
        held.extend(self.fusion.held_requests())  # between a drop's park and its fuse
        for inst in self.live_instances():
            inst.settle_at(end)
            held.extend(inst.held_requests())
            self.instance_records.append(self._record(inst, self.pools[inst.pool], end))
        return held
