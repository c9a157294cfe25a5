"""One simulation run: the SimPy environment, the arrival process, policy ticks and sampling.

Owns everything that is per-run (clock, id counter, random streams), so two simulations in one
process never interfere.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from types import MappingProxyType

import simpy
from simpy.core import URGENT
from simpy.events import Event, Timeout

from chironsim.errors import RunLimitError
from chironsim.limits import MAX_PERIODIC_EVENTS, MAX_TIMESERIES_ROWS
from chironsim.metrics.histogram import ItlRecorder
from chironsim.metrics.columns import RequestColumns, RowColumns
from chironsim.metrics.records import FINISHED, UNFINISHED, RequestRecord
from chironsim.metrics.slo import RequestClassSpec, slo_met
from chironsim.metrics.tables import EVENTS_SCHEMA, TIMESERIES_SCHEMA
from chironsim.contract.protocols import Autoscaler, Router
from chironsim.contract.views import kv_utilization
from chironsim.contract.states import DRAINING, LOADING, PROVISIONING, READY
from chironsim.sim.cluster import Cluster
from chironsim.sim.config import ClusterConfig
from chironsim.sim.events import EventLog
from chironsim.sim.request import Request
from chironsim.workload.spec import RequestSpec


class Simulation:
    """Replays a workload through a cluster under a policy and collects raw outcomes."""

    def __init__(
        self,
        cluster_config: ClusterConfig,
        classes: Mapping[str, RequestClassSpec],
        workload: Iterator[RequestSpec],
        router: Router,
        autoscalers: list[Autoscaler],
        duration_s: float | None,
        drain_s: float,
        sample_interval_s: float,
        progress: Callable[[float], None] | None = None,
        queued_classes: frozenset[str] = frozenset(),
        evicting_pools: frozenset[str] = frozenset(),
        engine_settings: Mapping[str, object] = MappingProxyType({}),
    ) -> None:
        self.env = simpy.Environment()
        self.classes = dict(classes)
        self.workload = workload
        self.autoscalers = autoscalers
        self.duration_s = duration_s
        self.drain_s = drain_s
        self.sample_interval_s = sample_interval_s
        self.progress = progress
        #: One record per request, kept as columns (RequestColumns: iterates as records).
        self.request_records = RequestColumns()
        self.event_log = EventLog(lambda: self.env.now)
        # events and samples kept as columns (a week's worth as dicts is ~100 MB)
        self.event_log.rows = RowColumns(EVENTS_SCHEMA)  # type: ignore[assignment]
        self.events = self.event_log.rows
        self.timeseries = RowColumns(TIMESERIES_SCHEMA)
        self.arrived = 0
        self.terminal = 0
        self.last_arrival = 0.0
        self._arrivals_done = False
        self._all_done = self.env.event()
        self.cluster = Cluster(self.env, cluster_config, router, self._request_done, self.event_log,
                               queued_classes, evicting_pools, engine_settings)
        #: Every inter-token gap, per class, as log-bucket histograms; instances find it on
        #: their host when their engine loop starts (Instance._run).
        self.itl_recorder = ItlRecorder()
        self.cluster.itl_recorder = self.itl_recorder
        self._tokens_at_last_sample: dict[str, int] = {}
        self._specs: Iterator[RequestSpec] | None = None  # the workload, as it is read
        self._next_id = 0

    # --- processes ------------------------------------------------------------------------
    def _arrivals(self):
        """The arrivals as a process of their own (a caller that drives ``env`` itself)."""
        self._arrive(None)
        return
        yield  # a generator: env.process accepts it

    def _start_arrivals(self) -> None:
        """Start the arrivals as a chain of timeouts with a callback each, not a SimPy process:
        the same events at the same instants, scheduled at the same points (the first at
        start-up as a process's ``Initialize`` is, urgent), minus a process resume per arrival
        and the process's own end event, which nothing waits on."""
        start = Event(self.env)
        start.callbacks.append(self._arrive)
        start._ok = True
        start._value = None
        self.env.schedule(start, URGENT)

    def _arrive(self, event: Event | None) -> None:
        """Submit the request whose timeout fired (its spec is the timeout's value), then every
        later one due now; the first one due later gets a timeout, and this returns."""
        env = self.env
        specs = self._specs
        if specs is None:
            specs = self._specs = iter(self.workload)
        spec = event._value if event is not None else None
        duration = self.duration_s
        classes = self.classes
        submit = self.cluster.submit
        while True:
            if spec is not None:
                req = Request(self._next_id, spec, classes[spec.request_class].priority)
                self._next_id += 1
                self.arrived += 1
                self.last_arrival = spec.arrival
                submit(req)
            spec = next(specs, None)
            if spec is None or (duration is not None and spec.arrival >= duration):
                break
            if spec.arrival > env.now:
                Timeout(env, spec.arrival - env.now, spec).callbacks.append(self._arrive)
                return
        self._arrivals_done = True
        self._check_done()

    # Validation bounds these counts when it knows the run's length; a trace-driven run's is
    # known only as it goes, so the loops stop there too (one spare: the sample at t = 0).
    def _ticker(self, autoscaler: Autoscaler):
        # A poller (``observes = "load"``) gets load reports only; the others full views.
        observe = (self.cluster.load_view if getattr(autoscaler, "observes", "") == "load"
                   else self.cluster.view)
        for _ in range(MAX_PERIODIC_EVENTS + 1):
            yield self.env.timeout(autoscaler.interval)
            self.cluster.apply(autoscaler.on_tick(observe()))
        raise self._too_many("policy ticks", f"the policy's interval of {autoscaler.interval:g} s",
                             MAX_PERIODIC_EVENTS)

    def _sampler(self):
        most = MAX_TIMESERIES_ROWS // len(self.cluster.pools)
        for _ in range(most + 1):
            self._sample()
            yield self.env.timeout(self.sample_interval_s)
        raise self._too_many("timeseries samples per pool",
                             f"sample_interval_s = {self.sample_interval_s:g} s", most)

    def _too_many(self, counted: str, cause: str, most: int) -> RunLimitError:
        """A run longer than validation could know (a trace sets its length) hit a count bound."""
        return RunLimitError(
            f"more than {most:,} {counted} ({cause}; the run had reached "
            f"t = {self.env.now:,.0f} s, last arrival at {self.last_arrival:,.0f} s): "
            f"raise the interval or set duration_s")

    def _sample(self) -> None:
        """One row per pool: every instance's figures at now, in one pass (no frozen view
        per instance: this runs for the whole cluster every ``sample_interval_s``). Sums go
        in instance order, so floats add up as they always did. The row goes to the columns
        as values in :data:`TIMESERIES_SCHEMA`'s order (no dict per row)."""
        now = self.env.now
        cluster = self.cluster
        interval = self.sample_interval_s
        last = self._tokens_at_last_sample
        add_row = self.timeseries.append_values
        global_queues = cluster.global_queues
        for name in cluster.pools:
            provisioning = loading = ready = draining = fused = 0
            waiting = running = kv_sum = seqs_sum = 0
            tokens = cluster.stopped_tokens[name]
            for inst in cluster.instances[name]:
                inst_running, inst_waiting, kv_used, inst_tokens = inst.occupancy(now)
                running += inst_running
                waiting += inst_waiting
                tokens += inst_tokens
                if inst.group:
                    fused += 1
                state = inst.state
                if state == READY:
                    ready += 1
                    kv_sum += kv_utilization(kv_used, inst.kv.capacity)
                    seqs_sum += inst.max_num_seqs
                elif state == PROVISIONING:
                    provisioning += 1
                elif state == LOADING:
                    loading += 1
                elif state == DRAINING:
                    draining += 1
            previous = last.get(name, 0)
            last[name] = tokens
            waiting += len(cluster.queues[name])
            if global_queues:
                waiting += self._global_waiting(name)
            add_row((
                now,                                                     # time
                name,                                                    # pool
                provisioning, loading, ready, draining,
                waiting,
                running,
                kv_sum / ready if ready else math.nan,                   # kv_utilization
                seqs_sum / ready if ready else math.nan,                 # max_num_seqs
                (tokens - previous) / interval if now > 0 else 0.0,      # tokens_per_s
                fused,                                                   # fused_members
            ))

    def _global_waiting(self, pool: str) -> int:
        """Global-queue requests are attributed to the first pool serving their class."""
        total = 0
        for cls, queue in self.cluster.global_queues.items():
            if self.cluster.pools_for(cls)[:1] == [pool]:
                total += len(queue)
        return total

    # --- callbacks ------------------------------------------------------------------------
    def _request_done(self, req: Request, status: str, reason: str = "") -> None:
        self.request_records.append(self._record_values(req, status))
        self.terminal += 1
        self._check_done()

    def _check_done(self) -> None:
        if self._arrivals_done and self.terminal == self.arrived and not self._all_done.triggered:
            self._all_done.succeed()

    def _record(self, req: Request, status: str) -> RequestRecord:
        return RequestRecord(*self._record_values(req, status))

    def _record_values(self, req: Request, status: str) -> list[object]:
        """A request's record as its fields in :class:`RequestRecord`'s order, a list, which
        :meth:`RequestColumns.append` stores as it is: no frozen record built per request."""
        finished = status == FINISHED
        arrival = req.arrival
        first_token_time = req.first_token_time
        finish_time = req.finish_time
        ttft = first_token_time - arrival
        e2e = finish_time - arrival if finished else math.nan
        tpot = ((finish_time - first_token_time) / (req.generated - 1)
                if finished and req.generated > 1 else math.nan)
        met = slo_met(self.classes[req.request_class].slo, finished, ttft, tpot, req.itl_max,
                      e2e, finish_time, req.deadline)
        return [
            req.request_id, req.request_class, arrival, req.prompt_tokens, req.output_tokens,
            req.generated, status, first_token_time, finish_time, ttft, tpot, req.itl_max, e2e,
            req.deadline, req.preemptions, req.migrations, req.evictions,
            ";".join(req.instances), met, req.admit_time - arrival,
        ]

    def _ceiling(self) -> float:
        """Latest end: the window (or, once known, the last arrival) plus the drain allowance."""
        if self.duration_s is not None:
            return self.duration_s + self.drain_s
        return self.last_arrival + self.drain_s if self._arrivals_done else math.inf

    # --- running --------------------------------------------------------------------------
    def run(self) -> float:
        """Run to completion; returns the simulated end time."""
        env = self.env
        self._start_arrivals()
        for scaler in self.autoscalers:
            env.process(self._ticker(scaler))
        env.process(self._sampler())
        # End when every request is done, but not before the observation window closes and
        # not after the drain allowance; the 60 s slices only pace the progress callback.
        while not self._all_done.triggered:
            ceiling = self._ceiling()
            if env.now >= ceiling:
                break
            slice_end = min(env.now + 60.0, ceiling)
            env.run(until=self._all_done | env.timeout(slice_end - env.now))
            if self.progress:
                self.progress(env.now)
        if self.duration_s is not None and env.now < self.duration_s:
            env.run(until=self.duration_s)
        end = env.now
        if self.progress:
            self.progress(end)
        for req in self.cluster.finalize(end):
            req_status = UNFINISHED
            self.request_records.append(self._record_values(req, req_status))
            self.terminal += 1
        self.request_records.sort_by_id()
        return end
