"""A contract check that every policy must pass, for chironsim's own tests and plug-ins.

    >>> from chironsim.testing import check_policy
    >>> from chironsim.policies.reactive import ReactivePolicyConfig
    >>> check_policy(ReactivePolicyConfig(target=0.7))

:func:`check_policy` builds the policy twice per seed and drives both copies through the same
sequence of cluster views, ticking each autoscaler on its own interval and routing a few
requests of every non-queued class at every view. It raises ``AssertionError`` naming the
first broken rule:

- the modules that define the policy (its config, builder, router and autoscaler classes, and
  whatever they import from their own package) import no SimPy: policies see frozen views only;
- the same seed and the same views give identical actions and routes (no hidden global state,
  no unseeded randomness);
- every action is of a registered type (:func:`~chironsim.contract.actions.action_type`) and
  its own ``problem(view)`` finds nothing wrong: e.g. it names a pool or instance that is in
  the view, keeps ``ScaleTo`` within the pool's ``[min_instances, max_instances]`` and
  ``SetMaxNumSeqs`` at 1 or more;
- the router returns one of the candidates' ids (or ``None``, which the Router protocol allows
  for holding a request).

The default views (:func:`default_views`) are an open-loop story in three pools, one playing
each of Chiron's roles, with a cluster-level queue: idle, steady load, an overload with a burst
of starting instances and a long queue whose deadline is near, churn (an instance draining then
stopping, new ids appearing), then a long quiet spell with an empty queue. Each pool also
carries the instances' load reports (what a polling policy such as Llumnix reads): in the
overload, full instances beside freshly started, still empty ones make a load balancer migrate.
"""

from __future__ import annotations

import ast
import importlib.util
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

from chironsim.contract.actions import action_problem
from chironsim.contract.load import LoadReport
from chironsim.policies.bundle import PolicyBundle
from chironsim.contract.states import DRAINING, LOADING, PROVISIONING, READY, STOPPED
from chironsim.contract.views import ClusterView, InstanceView, PoolView, QueueView, RequestView
from chironsim.policies.registry import build_policy

__all__ = ["check_policy", "default_views", "forbidden_imports", "simpy_imports"]

Builder = Callable[[np.random.Generator], PolicyBundle]

# Classes the default story uses: the first two play Chiron's interactive and batch roles.
_CLASSES = (("interactive", 0), ("batch", 1), ("other", 2))


# --- the default views ----------------------------------------------------------------------


@dataclass
class _Instance:
    """An instance of the open-loop story and its cumulative counters."""

    instance_id: str
    pool: str
    role: int
    seats: int
    states: list[tuple[float, str]]  # (from time, state), ascending; STOPPED removes it
    tokens: int = 0
    iterations: int = 0
    seconds: float = 0.0
    pure_iterations: int = 0
    pure_seconds: float = 0.0

    def ready_since(self) -> float:
        """When the instance (last) became ready."""
        return max((start for start, state in self.states if state == READY), default=0.0)

    def state_at(self, t: float) -> str | None:
        current = None
        for start, state in self.states:
            if t >= start:
                current = state
        return None if current == STOPPED else current


@dataclass(frozen=True)
class _Load:
    """What an instance of one role runs in one phase: per class, plus waiting, KV, ITL."""

    interactive: float  # fraction of seats running interactive work
    batch: float  # fraction of seats running batch work
    waiting: int
    kv: float
    itl: float


@dataclass(frozen=True)
class _Queue:
    """The cluster-level queue in one phase; ``shrink`` drains it by 2 % a second."""

    length: int
    mean: float
    std: float
    deadline_in: float
    shrink: bool = False


# Phases: (start time, loads per role, queue or None).
_PHASES: tuple[tuple[float, tuple[_Load, _Load, _Load], _Queue | None], ...] = (
    (0.0, (_Load(0, 0, 0, 0.0, 0.01), _Load(0, 0, 0, 0.0, 0.01), _Load(0, 0, 0, 0.0, 0.01)),
     None),
    (20.0, (_Load(0.3, 0, 0, 0.3, 0.02), _Load(0.15, 0.6, 0, 0.5, 0.03),
            _Load(0, 0.8, 0, 0.6, 0.2)), _Queue(3000, 250.0, 200.0, 7200.0)),
    (45.0, (_Load(1.0, 0, 12, 0.95, 0.08), _Load(1.0, 0, 3, 0.9, 0.09),
            _Load(0, 1.0, 0, 0.9, 0.6)), _Queue(50_000, 300.0, 260.0, 30.0)),
    (75.0, (_Load(0.6, 0, 0, 0.6, 0.04), _Load(0.3, 0.3, 0, 0.6, 0.04),
            _Load(0, 0.5, 0, 0.5, 0.3)), _Queue(4000, 200.0, 150.0, 600.0, shrink=True)),
    (95.0, (_Load(0.05, 0, 0, 0.05, 0.015), _Load(0, 0, 0, 0.0, 0.01),
            _Load(0, 0, 0, 0.0, 0.01)), _Queue(0, 0.0, 0.0, math.inf)),
)
_END = 180.0


def _story(pools: tuple[str, str, str]) -> list[_Instance]:
    inter, mixed, batch = pools
    return [
        _Instance(f"{inter}-0", inter, 0, 64, [(0, READY)]),
        _Instance(f"{inter}-1", inter, 0, 64, [(0, READY), (75, DRAINING), (85, STOPPED)]),
        _Instance(f"{inter}-2", inter, 0, 64, [(45, PROVISIONING), (55, LOADING), (65, READY)]),
        _Instance(f"{inter}-3", inter, 0, 64, [(45, PROVISIONING), (55, LOADING), (65, READY)]),
        _Instance(f"{mixed}-0", mixed, 1, 64, [(0, READY)]),
        _Instance(f"{mixed}-1", mixed, 1, 64, [(50, PROVISIONING), (70, READY)]),
        _Instance(f"{batch}-0", batch, 2, 256, [(0, READY), (100, STOPPED)]),
        _Instance(f"{batch}-1", batch, 2, 256, [(50, PROVISIONING), (62, READY)]),
        _Instance(f"{batch}-2", batch, 2, 256, [(80, READY)]),
    ]


def default_views(seed: int = 0, pools: tuple[str, str, str] = ("interactive", "mixed", "batch"),
                  queued_class: str = "batch", step_s: float = 1.0) -> list[ClusterView]:
    """The default sequence of views: one every ``step_s`` seconds for 180 s.

    ``pools`` names the pools playing the interactive, mixed and batch roles; the interactive
    and batch classes are named ``interactive`` and ``batch``, and ``queued_class`` names the
    cluster-level queue. Noise on loads and latencies comes from ``seed`` only.
    """
    rng = np.random.default_rng(seed)
    instances = _story(pools)
    bounds = {pools[0]: (1, 6), pools[1]: (0, 3), pools[2]: (0, 5)}
    views: list[ClusterView] = []
    steps = int(round(_END / step_s))
    for k in range(steps):
        t = k * step_s
        start, loads, queue = [p for p in _PHASES if p[0] <= t][-1]
        members: dict[str, list[InstanceView]] = {name: [] for name in pools}
        reports: dict[str, list[LoadReport]] = {name: [] for name in pools}
        for inst in instances:
            state = inst.state_at(t)
            if state is None:
                continue
            view, report = _observe(inst, state, loads[inst.role], step_s, rng, t)
            members[inst.pool].append(view)
            reports[inst.pool].append(report)
        pool_views = {
            name: PoolView(name=name, instances=tuple(members[name]),
                           min_instances=bounds[name][0], max_instances=bounds[name][1],
                           load=tuple(reports[name]),
                           fusion_gain_blocks=tuple((g - 1) * _FUSION_GAIN_PER_MEMBER
                                                    for g in range(2, _FUSION_MAX_GROUP + 1)))
            for name in pools
        }
        queues = {}
        if queue is not None:
            length = queue.length
            if queue.shrink:
                length = max(1, int(length * (1 - 0.02 * (t - start))))
            queues[queued_class] = QueueView(
                request_class=queued_class, length=length, remaining_tokens_mean=queue.mean,
                remaining_tokens_std=queue.std, earliest_deadline=t + queue.deadline_in,
                oldest_arrival=t - 10.0 if length else math.inf)
        views.append(ClusterView(time=t, pools=pool_views, queues=queues))
    return views


#: An instance that became ready less than this long ago is still empty (nothing has been
#: routed to it yet): a load-balancing policy sees it as the freest destination.
_FRESH_S = 5.0
#: The KV blocks, watermark and prompt blocks of every instance of the story.
_CAPACITY, _WATERMARK, _PROMPT_BLOCKS = 4096, 40, 32
#: Blocks each member beyond the first adds when a group fuses (PoolView.fusion_gain_blocks):
#: a quarter of an instance's KV, about what a 7B model's dropped layers free on a 24 GB GPU.
_FUSION_GAIN_PER_MEMBER, _FUSION_MAX_GROUP = 1024, 8


def _observe(inst: _Instance, state: str, load: _Load, step_s: float,
             rng: np.random.Generator, t: float) -> tuple[InstanceView, LoadReport]:
    """Advance the instance's counters by one step of ``load`` and snapshot it, as a view and
    as the load report a polling policy reads (the same state, counted the poller's way)."""
    running_i = running_b = waiting = 0
    kv = 0.0
    fresh = state == READY and t - inst.ready_since() < _FRESH_S
    if state in (READY, DRAINING) and not fresh:
        jitter = float(rng.uniform(0.8, 1.2))
        running_i = min(inst.seats, int(round(load.interactive * inst.seats * jitter)))
        running_b = min(inst.seats - running_i, int(round(load.batch * inst.seats * jitter)))
        waiting = load.waiting if state == READY else 0
        kv = min(1.0, load.kv * jitter)
        if running_i + running_b:
            itl = load.itl * float(rng.uniform(0.7, 1.6))
            iterations = max(1, int(step_s / itl))
            inst.iterations += iterations
            inst.seconds += iterations * itl
            # One iteration in five carries a prefill chunk and takes longer than the rest.
            pure = iterations - iterations // 5
            inst.pure_iterations += pure
            inst.pure_seconds += pure * itl * 0.8
            inst.tokens += iterations * (running_i + running_b)
    by_class = tuple((name, n) for name, n in (("interactive", running_i), ("batch", running_b))
                     if n)
    used = int(kv * _CAPACITY)
    view = InstanceView(
        instance_id=inst.instance_id, pool=inst.pool, state=state,
        running=running_i + running_b, waiting=waiting,
        kv_used_blocks=used, kv_capacity_blocks=_CAPACITY,
        max_num_seqs=inst.seats, tokens_generated=inst.tokens,
        decode_iterations=inst.iterations, decode_seconds=inst.seconds,
        pure_decode_iterations=inst.pure_iterations, pure_decode_seconds=inst.pure_seconds,
        running_by_class=by_class,
    )
    priorities = dict(_CLASSES)
    report = LoadReport(
        inst.instance_id, inst.pool, state, _CAPACITY, _CAPACITY - used, _WATERMARK,
        running=view.running, waiting=waiting,
        waiting_prompt_blocks=float(waiting * _PROMPT_BLOCKS),
        head_of_line_blocks=float(_PROMPT_BLOCKS if waiting else 0),
        preempted=1 if kv >= 0.99 and view.running else 0,
        movable=view.running,
        running_priorities=tuple(priorities[name] for name, _ in by_class))
    return view, report


# --- the SimPy scan -------------------------------------------------------------------------


def _module_file(name: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError, AttributeError):
        return None
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    return Path(spec.origin)


def _imports(name: str, path: Path) -> list[str]:
    """Absolute names of every module (and ``from``-imported name) that ``path`` imports."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                try:
                    base = importlib.util.resolve_name("." * node.level + base, package)
                except (ImportError, ValueError):
                    continue
            found.append(base)
            found.extend(f"{base}.{alias.name}" for alias in node.names)
    return found


def simpy_imports(modules: Iterable[str]) -> dict[str, list[str]]:
    """Which of ``modules``, or the modules they import from their own top-level package
    (followed transitively, parent packages included), import SimPy: {module: [imports]}."""
    return forbidden_imports(modules, "simpy")


def forbidden_imports(modules: Iterable[str], forbidden: str) -> dict[str, list[str]]:
    """Which of ``modules``, or the modules they import from their own top-level package
    (followed transitively, parent packages included), import ``forbidden`` or a module
    inside it: {module: [imports]}. Layering rules (policies import no SimPy; ``sim/``
    imports nothing from ``policies/``) are checked with it."""
    todo = list(modules)
    seen: set[str] = set()
    offenders: dict[str, list[str]] = {}
    inside = forbidden + "."
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = _module_file(name)
        if path is None:
            continue
        top = name.split(".")[0]
        parts = name.split(".")
        todo.extend(".".join(parts[:k]) for k in range(2, len(parts)))  # parent packages
        for imported in _imports(name, path):
            if imported == forbidden or imported.startswith(inside):
                offenders.setdefault(name, []).append(imported)
            elif imported.split(".")[0] == top and top != "":
                todo.append(imported)
    return {name: sorted(set(found)) for name, found in offenders.items()}


# --- the check ------------------------------------------------------------------------------


def _as_builder(config_or_builder: BaseModel | Builder) -> tuple[Builder, str, list[str]]:
    """A one-argument builder, a display name, and the modules that define the policy."""
    if isinstance(config_or_builder, BaseModel):
        cfg = config_or_builder
        kind = getattr(cfg, "kind", type(cfg).__name__)
        return (lambda rng: build_policy(cfg, rng)), f"policy {kind!r}", [type(cfg).__module__]
    if callable(config_or_builder):
        builder = config_or_builder
        label = getattr(builder, "__qualname__", repr(builder))
        module = getattr(builder, "__module__", None)
        return builder, f"policy built by {label}", [module] if module else []
    raise TypeError("check_policy expects a policy config or a builder(rng) -> PolicyBundle, "
                    f"got {type(config_or_builder).__name__}")


def _request_classes(views: Sequence[ClusterView]) -> list[tuple[str, int]]:
    classes = dict(_CLASSES)
    for view in views:
        for name in view.queues:
            classes.setdefault(name, len(classes))
    return list(classes.items())


def _build(builder: Builder, seed: int, label: str) -> PolicyBundle:
    bundle = builder(np.random.default_rng(seed))
    if not isinstance(bundle, PolicyBundle):
        raise AssertionError(f"{label}: the builder returned {type(bundle).__name__}, "
                             "not a PolicyBundle")
    return bundle


def _drive(bundle: PolicyBundle, views: Sequence[ClusterView],
           label: str) -> list[tuple[Any, ...]]:
    """Tick and route through ``views``; fail on the first invalid output. Returns every
    output in order, for the determinism comparison."""
    if not callable(getattr(bundle.router, "route", None)):
        raise AssertionError(f"{label}: the router has no route() method")
    for scaler in bundle.autoscalers:
        interval = getattr(scaler, "interval", None)
        if not isinstance(interval, (int, float)) or not (0 < interval < math.inf):
            raise AssertionError(f"{label}: autoscaler {type(scaler).__name__} has interval "
                                 f"{interval!r}; it must be a positive finite number of seconds")
    classes = [(name, prio) for name, prio in _request_classes(views)
               if name not in bundle.queued_classes]
    trace: list[tuple[Any, ...]] = []
    due = [views[0].time if views else 0.0 for _ in bundle.autoscalers]
    request_id = 0
    for index, view in enumerate(views):
        where = f"{label}, view {index} (t={view.time:g})"
        for k, scaler in enumerate(bundle.autoscalers):
            if view.time + 1e-9 < due[k]:
                continue
            due[k] = view.time + scaler.interval
            try:
                actions = list(scaler.on_tick(view))
            except Exception as exc:  # report which view broke it
                raise AssertionError(f"{where}: {type(scaler).__name__}.on_tick raised "
                                     f"{type(exc).__name__}: {exc}") from exc
            for action in actions:
                problem = action_problem(action, view)
                if problem is not None:
                    raise AssertionError(f"{where}: {type(scaler).__name__} returned {problem}")
            trace.append(("tick", index, k, tuple(actions)))
        for candidates in _candidate_sets(view):
            ids = [inst.instance_id for inst in candidates]
            for name, priority in classes:
                request = RequestView(request_id, name, priority, 512, 128, view.time)
                request_id += 1
                try:
                    chosen = bundle.router.route(request, candidates)
                except Exception as exc:
                    raise AssertionError(f"{where}: router raised {type(exc).__name__}: {exc} "
                                         f"routing class {name!r} over {ids}") from exc
                if chosen is not None and chosen not in ids:
                    raise AssertionError(f"{where}: router returned {chosen!r} for class "
                                         f"{name!r}, not one of the candidates {ids}")
                trace.append(("route", index, request.request_id, chosen))
    return trace


def _candidate_sets(view: ClusterView) -> list[tuple[InstanceView, ...]]:
    """Ready instances of all pools together, then of each pool alone (non-empty sets)."""
    per_pool = [tuple(i for i in pool.instances if i.state == READY)
                for pool in view.pools.values()]
    together = tuple(i for ready in per_pool for i in ready)
    sets = [together] if together else []
    sets.extend(ready for ready in per_pool if ready and len(per_pool) > 1)
    return sets


def check_policy(config_or_builder: BaseModel | Builder,
                 views: Sequence[ClusterView] | None = None,
                 seeds: Sequence[int] = (0, 1)) -> None:
    """Raise ``AssertionError`` unless the policy keeps the contract in the module docstring.

    ``config_or_builder`` is a registered policy config (built with
    :func:`chironsim.policies.registry.build_policy`) or a function ``builder(rng)`` returning
    a fresh :class:`PolicyBundle`. ``views`` defaults to :func:`default_views`; pass your own
    when the policy expects other pool names. Each seed builds the policy twice.
    """
    builder, label, modules = _as_builder(config_or_builder)
    seq = list(views) if views is not None else default_views()
    if not seq:
        raise ValueError("check_policy needs at least one view")
    if any(b.time < a.time for a, b in zip(seq, seq[1:])):
        raise ValueError("check_policy needs views in time order")

    first = _build(builder, seeds[0] if seeds else 0, label)
    objects = [first.router, *first.autoscalers]
    modules = modules + [type(obj).__module__ for obj in objects]
    offenders = simpy_imports(modules)
    if offenders:
        listed = "; ".join(f"{mod} imports {', '.join(found)}"
                           for mod, found in sorted(offenders.items()))
        raise AssertionError(f"{label}: policy modules must not import SimPy ({listed})")

    for seed in seeds:
        runs = [_drive(_build(builder, seed, label), seq, f"{label} (seed {seed})")
                for _ in range(2)]
        a, b = runs
        for k, (x, y) in enumerate(zip(a, b)):
            if x != y:
                raise AssertionError(
                    f"{label} (seed {seed}) is not deterministic: two builds with the same "
                    f"seed fed the same views diverge at output {k}: {x!r} != {y!r}")
        if len(a) != len(b):
            raise AssertionError(f"{label} (seed {seed}) is not deterministic: the two builds "
                                 f"produced {len(a)} and {len(b)} outputs")
