"""Engine presets (issue 11 item 5): the prefill_first batching policy, the batch-dependent
engine overhead, the presets' validation and sources, and per-pool engines.

The scheduler checks run one instance on a recording iteration-time function, so every
iteration's batch is visible; the overhead checks compare the roofline with and without a
preset term by term; the run-level checks (fast-forward parity, per-pool presets) go through
the same config validation and wiring as ``chironsim run``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import simpy
from pandas.testing import assert_frame_equal
from scipy.optimize import minimize_scalar

from chironsim.catalog import get_gpu, get_model
from chironsim.cli import main
from chironsim.errors import ConfigError
from chironsim.experiments.config import parse_config
from chironsim.experiments.runner import run
from chironsim.perf.efficiency import Efficiency
from chironsim.perf.overhead import EngineOverhead, engine_preset, engine_presets, parse_presets
from chironsim.perf.reference import reference_cases, replay_seconds
from chironsim.perf.roofline import IterationTimeModel, prefill_attention_work
from chironsim.sim.cluster import PoolSpec
from chironsim.sim.config import ClusterConfig, EngineConfig, PoolConfig
from chironsim.sim.engine.scheduler import LocalScheduler, PrefillFirstScheduler
from chironsim.sim.instance import GROWTH, Instance
from chironsim.sim.request import Request
from chironsim.workload.spec import RequestSpec
from scenarios import build_simulation, fast_forward_scenario, scenario, synthetic
from test_instance import RecordingHost

PRESETS = sorted(engine_presets())


# ------------------------------------------------------------------ one instance, recorded


class Recorder:
    """A linear iteration time that remembers every batch it priced: (prefill tokens,
    decodes, seconds), one row per iteration (a stretch adds one row per iteration)."""

    def __init__(self) -> None:
        self.batches: list[tuple[float, float, float]] = []
        self.stretches = 0  # calls that priced several iterations at once

    def __call__(self, prefill_tokens, attention, decodes, context):
        self.stretches += np.ndim(context) > 0
        seconds = (0.005 + 1e-5 * np.asarray(prefill_tokens) + 1e-9 * np.asarray(attention)
                   + 1e-4 * np.asarray(decodes) + 1e-7 * np.asarray(context))
        for s in np.atleast_1d(seconds):
            self.batches.append((float(prefill_tokens), float(decodes), float(s)))
        return seconds


def instance(scheduler: str, *, budget: int = 2048, fast_forward: bool = False,
             capacity: int = 400, mode: str = "recompute", max_num_seqs: int = 64):
    env = simpy.Environment()
    host = RecordingHost()
    timer = Recorder()
    engine = EngineConfig(scheduler=scheduler, fast_forward=fast_forward, preemption_mode=mode,
                          max_num_seqs=max_num_seqs, max_num_batched_tokens=budget)
    inst = Instance(env, host, "i0", "pool", engine, timer, capacity, 200, 0.001, 10**6, 1)
    inst.start()
    return env, inst, host, timer


def arrive(env, inst, requests: list[tuple[float, int, int]], priority: int = 0) -> None:
    """``(time, prompt, output)`` arrivals, ids in list order; those at time 0 are queued
    before the engine's first boundary."""
    for i, (t, prompt, output) in enumerate(requests):
        if t == 0:
            inst.enqueue(Request(i, RequestSpec(t, prompt, output), priority=priority))

    def process():
        for i, (t, prompt, output) in enumerate(requests):
            if t > 0:
                yield env.timeout(t - env.now)
                inst.enqueue(Request(i, RequestSpec(t, prompt, output), priority=priority))
    env.process(process())


def random_run(scheduler: str, fast_forward: bool, mode: str = "recompute", seed: int = 1,
               capacity: int = 400, n: int = 200):
    env, inst, host, timer = instance(scheduler, fast_forward=fast_forward, mode=mode,
                                      capacity=capacity)
    rng = np.random.default_rng(seed)
    t, requests = 0.0, []
    for _ in range(n):
        t += rng.exponential(0.2)
        requests.append((t, int(rng.integers(10, 800)), int(rng.integers(1, 400))))

    def process():
        for i, (t_i, prompt, output) in enumerate(requests):
            yield env.timeout(t_i - env.now)
            inst.enqueue(Request(i, RequestSpec(t_i, prompt, output), priority=i % 2))
    env.process(process())
    env.run(until=1e5)
    rows = sorted((r.request_id, s, r.first_token_time, r.finish_time, r.itl_max, r.preemptions,
                   r.generated) for r, s in host.done)
    return rows, inst, host, timer


def test_engine_picks_the_scheduler_of_its_policy():
    assert type(instance("chunked")[1].scheduler) is LocalScheduler
    assert type(instance("prefill_first")[1].scheduler) is PrefillFirstScheduler
    # unset: the preset's policy
    assert EngineConfig().batching == "chunked"
    assert EngineConfig(preset="vllm-v0").batching == "prefill_first"
    assert EngineConfig(preset="vllm-v0", scheduler="chunked").batching == "chunked"


def test_prefill_first_never_mixes_prefill_with_decodes():
    _, inst, host, timer = random_run("prefill_first", fast_forward=False)
    assert len(host.done) == 200 and all(s == "finished" for _, s in host.done)
    mixed = [(p, d) for p, d, _ in timer.batches if p > 0 and d > 0]
    assert not mixed, f"{len(mixed)} iterations mixed prefill and decodes, e.g. {mixed[:3]}"
    assert any(p > 0 for p, _, _ in timer.batches) and any(d > 0 for _, d, _ in timer.batches)
    assert all(p <= 2048 for p, _, _ in timer.batches)
    # the same traffic under chunked prefill does mix (so the check above can see mixing)
    _, _, _, chunked = random_run("chunked", fast_forward=False)
    assert any(p > 0 and d > 0 for p, d, _ in chunked.batches)


def test_decodes_run_when_nothing_waits():
    env, inst, host, timer = instance("prefill_first")
    arrive(env, inst, [(0.0, 100, 50), (0.0, 120, 50)])
    env.run(until=100)
    batches = [(p, d) for p, d, _ in timer.batches]
    assert batches[0] == (220, 0)  # both whole prompts in one prefill-only iteration
    assert batches[1:] == [(0, 2)] * 49  # then decode-only until both finish
    assert [s for _, s in host.done] == ["finished", "finished"]


def test_a_waiting_prompt_takes_precedence_and_the_decodes_wait_for_it():
    env, inst, host, timer = instance("prefill_first")
    arrive(env, inst, [(0.0, 100, 200), (0.1, 500, 10)])
    env.run(until=100)
    batches = [(p, d) for p, d, _ in timer.batches]
    # request 1 arrives mid-iteration: the next iteration is its prefill, alone
    first = batches.index((500, 0))
    assert first > 1 and all(b == (0, 1) for b in batches[1:first])
    assert batches[first + 1] == (0, 2)
    # request 0 sat that prefill out: one of its inter-token gaps spans both iterations
    stall = timer.batches[first][2] + timer.batches[first + 1][2]
    req0 = next(r for r, _ in host.done if r.request_id == 0)
    assert req0.itl_max == pytest.approx(stall, rel=1e-12)
    assert req0.generated == req0.output_tokens == 200


def test_whole_prompts_only_and_the_head_blocks_the_queue():
    env, inst, host, timer = instance("prefill_first", budget=300)
    arrive(env, inst, [(0.0, 200, 5), (0.0, 200, 5), (0.0, 50, 5)])
    env.run(until=100)
    prefills = [p for p, d, _ in timer.batches if p > 0]
    # 200 + 200 > 300: the second waits whole (FCFS: the 50 behind it waits too)
    assert prefills == [200, 250]
    assert all(d == 0 for p, d, _ in timer.batches if p > 0)


def test_a_prompt_longer_than_the_budget_runs_alone_in_budget_chunks():
    env, inst, host, timer = instance("prefill_first", budget=256)
    arrive(env, inst, [(0.0, 1000, 5), (0.0, 100, 5)])
    env.run(until=100)
    prefills = [(p, d) for p, d, _ in timer.batches if p > 0]
    # 1000 = 3 x 256 + 232: alone in budget-sized chunks; its last chunk leaves 24 tokens,
    # too few for the 100-token prompt, which gets the next prefill iteration
    assert prefills == [(256, 0), (256, 0), (256, 0), (232, 0), (100, 0)]
    assert max(p for p, _, _ in timer.batches) <= 256
    assert [s for _, s in host.done] == ["finished", "finished"]
    # under chunked prefill the long prompt shares its iterations
    env, inst, host, chunked = instance("chunked", budget=256)
    arrive(env, inst, [(0.0, 1000, 5), (0.0, 100, 5)])
    env.run(until=100)
    assert max(p for p, _, _ in chunked.batches) <= 256


@pytest.mark.parametrize("mode", ["recompute", "swap"])
@pytest.mark.parametrize("seed", [1, 2])
def test_prefill_first_fast_forward_is_identical_to_stepping(mode: str, seed: int):
    fast, inst_fast, host_fast, timer = random_run("prefill_first", True, mode, seed, capacity=300)
    slow, inst_slow, _, _ = random_run("prefill_first", False, mode, seed, capacity=300)
    assert timer.stretches > 50, "fast-forward must have priced stretches"
    assert fast == slow
    assert inst_fast.step == inst_slow.step
    assert inst_fast.busy_seconds == inst_slow.busy_seconds
    assert inst_fast.pure_decode_iterations == inst_slow.pure_decode_iterations
    assert ("swap_out" if mode == "swap" else "preempt") in set(host_fast.events)


@pytest.mark.parametrize("mode", ["recompute", "swap"])
def test_prefill_first_conserves_blocks_and_tokens(mode: str):
    rows, inst, host, _ = random_run("prefill_first", True, mode, seed=3, capacity=300)
    assert len(rows) == 200 and all(s == "finished" for _, s in host.done)
    for req, _ in host.done:
        assert req.generated == req.output_tokens
        assert req.finish_time >= req.first_token_time >= req.arrival
    inst.kv.check_invariants()
    assert inst.kv.free_blocks == inst.kv.capacity
    assert inst.kv.owned(GROWTH) == 0
    assert not inst.arriving and not inst.scheduler.held
    assert inst.tokens_generated == sum(r.output_tokens for r, _ in host.done)


def test_sat_out_decodes_stay_running_in_views():
    env, inst, host, timer = instance("prefill_first")
    arrive(env, inst, [(0.0, 100, 400), (0.0, 100, 400), (0.3, 2000, 5)])
    seen = []

    def probe():
        yield env.timeout(0.3)
        while not (timer.batches and timer.batches[-1][0] == 2000):
            yield env.timeout(0.001)
        yield env.timeout(0.001)  # inside the 2000-token prefill iteration (27 ms)
        seen.append((inst.view(env.now).running, dict(inst.running_by_class), len(inst.decodes),
                     len(inst.arriving)))
    env.process(probe())
    env.run(until=200)
    running, by_class, decoding, sitting_out = seen[0]
    assert decoding == 0 and sitting_out == 2
    assert running == 3 and by_class == {"default": 3}


# ------------------------------------------------------------------ the overhead model


def roofline(preset: str = "default", gpu: str = "a100-80gb", model: str = "llama-3-8b", tp: int = 1,
             **engine) -> IterationTimeModel:
    overhead = EngineConfig(preset=preset, **engine).overhead_model()
    return IterationTimeModel(get_model(model), get_gpu(gpu), tp, overhead=overhead)


BATCHES = [(0, 0.0, 1, 300.0), (0, 0.0, 64, 64 * 900.0), (512, float(prefill_attention_work(512, 0)), 0, 0.0),
           (256, float(prefill_attention_work(256, 1000)), 32, 32 * 700.0)]


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("cuda_graphs", [True, False])
def test_overhead_is_constant_plus_per_sequence_plus_launches(preset: str, cuda_graphs: bool):
    extra = {} if cuda_graphs else {"overhead": {"per_layer_launch_s": 3e-5}}
    timer = roofline(preset, cuda_graphs=cuda_graphs, **extra)
    bare = IterationTimeModel(timer.model, timer.gpu, 1, overhead=EngineOverhead(constant_s=0.0))
    terms = timer.overhead
    p = engine_preset(preset)
    constant = Efficiency.for_gpu(timer.gpu).iteration_overhead_s if p.constant_s is None else p.constant_s
    launch = 0.0 if cuda_graphs else 3e-5  # the explicit key replaces the preset's value
    layers = timer.model.num_layers
    for pt, work, ds, ctx in BATCHES:
        sampled = ds + min(pt, 1)
        expected = constant + p.per_sequence_s * sampled + (launch * layers if ds > 0 else 0.0)
        got = timer.iteration_time(pt, work, ds, ctx) - bare.iteration_time(pt, work, ds, ctx)
        assert got == pytest.approx(expected, rel=1e-9, abs=1e-12)
        assert terms.seconds(constant, sampled, layers, ds > 0) == pytest.approx(expected, rel=1e-12)


def test_default_preset_prices_exactly_as_before():
    """The default preset is the calibrated model bit for bit (regression baselines hold)."""
    rng = np.random.default_rng(5)
    for gpu in ("a100-80gb", "h100-sxm"):
        plain = IterationTimeModel(get_model("llama-3-70b"), get_gpu(gpu), 4)
        preset = roofline("default", gpu, "llama-3-70b", 4)
        for _ in range(300):
            pt, ds = int(rng.integers(0, 4000)), int(rng.integers(0, 256))
            work, ctx = float(prefill_attention_work(pt, rng.integers(0, 2000))), float(ds * rng.integers(1, 8000))
            assert preset.iteration_time(pt, work, ds, ctx) == plain.iteration_time(pt, work, ds, ctx)
        contexts = 64 * (500.0 + np.arange(300))
        assert np.array_equal(preset.iteration_time(0, 0.0, 64, contexts),
                              plain.iteration_time(0, 0.0, 64, contexts))


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_stretch_pricing_equals_one_iteration_at_a_time(preset: str):
    extra = {"overhead": {"per_layer_launch_s": 3e-5}} if preset == "tensorrt-llm" else {}
    timer = roofline(preset, cuda_graphs=False, **extra)
    contexts = 48 * (700.0 + np.arange(200))
    stretch = timer.iteration_time(0, 0.0, 48, contexts)
    assert np.array_equal(stretch, [timer.iteration_time(0, 0.0, 48, float(c)) for c in contexts])
    general = timer.iteration_time(np.zeros(200), np.zeros(200), np.full(200, 48), contexts)
    assert np.array_equal(stretch, general)


def test_stage_times_pay_the_constant_once_each_and_the_launches_once_in_all():
    timer = roofline("vllm-v0", "h100-sxm", "llama-3-70b", 4, cuda_graphs=False)
    p = engine_preset("vllm-v0")
    split = [40, 40]
    stages = [timer.stage_time(split[0], False, 0, 0.0, 32, 32 * 900.0),
              timer.stage_time(split[1], True, 0, 0.0, 32, 32 * 900.0)]
    whole = timer.iteration_time(0, 0.0, 32, 32 * 900.0)
    assert sum(stages) == pytest.approx(whole + p.constant_s + p.per_sequence_s * 32, rel=1e-12)


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("cuda_graphs", [True, False])
@pytest.mark.parametrize(("gpu", "model", "tp"), [("a100-80gb", "llama-3-8b", 1),
                                                  ("h100-sxm", "llama-3-70b", 4),
                                                  ("h100-sxm", "mixtral-8x7b", 2)])
def test_a_larger_batch_is_never_cheaper_per_iteration(preset, cuda_graphs, gpu, model, tp):
    """Metamorphic: one more decode, or more prefill tokens, never shortens an iteration."""
    extra = {"overhead": {"per_layer_launch_s": 3e-5}} if preset == "tensorrt-llm" and not cuda_graphs else {}
    timer = roofline(preset, gpu, model, tp, cuda_graphs=cuda_graphs, **extra)
    for context in (200.0, 4000.0):
        for pt in (0, 1, 300):
            work = float(prefill_attention_work(pt, 0))
            b = np.arange(0, 513, dtype=float)
            times = timer.iteration_time(np.full(b.shape, float(pt)), np.full(b.shape, work), b, b * context)
            times = times[1:] if pt == 0 else times  # no work at all costs 0
            assert np.all(np.diff(times) >= 0), (pt, context, np.argmin(np.diff(times)))
    for ds in (0, 1, 64):
        tokens = np.arange(1, 4097, dtype=float)
        work = prefill_attention_work(tokens, 0.0)
        times = timer.iteration_time(tokens, work, np.full(tokens.shape, float(ds)),
                                     np.full(tokens.shape, ds * 1000.0))
        assert np.all(np.diff(times) >= 0), ds
        if ds:  # adding prefill tokens to a decode iteration removes no launch or sequence term
            assert times[0] >= timer.iteration_time(0, 0.0, ds, ds * 1000.0)


# ------------------------------------------------------------------ presets and their sources


def refit_constant(engine_prefix: str) -> float:
    """The log-ratio least-squares constant over one engine's public whole-request cases, as
    chironsim calibrate fits the default over all of them (chironsim/perf/calibrate.py)."""
    cases = [c for c in reference_cases() if c.name.startswith(engine_prefix)]
    bare = Efficiency.for_gpu(get_gpu(cases[0].gpu)).replace(iteration_overhead_s=0.0)
    predicted = np.array([replay_seconds(c, bare) for c in cases])
    measured = np.array([c.measured_s for c in cases])
    iterations = np.array([c.iterations for c in cases], dtype=float)
    fit = minimize_scalar(lambda o: float(np.sum(np.log((predicted + iterations * o) / measured) ** 2)),
                          bounds=(0.0, 0.05), method="bounded", options={"xatol": 1e-7})
    return float(fit.x)


@pytest.mark.parametrize(("preset", "prefix"), [("vllm", "vllm-"), ("tensorrt-llm", "trtllm-")])
def test_fitted_preset_constants_match_their_published_cases(preset: str, prefix: str):
    """A change to the kernel factors that moves these fits must update engines.yaml too."""
    assert engine_preset(preset).constant_s == pytest.approx(refit_constant(prefix), rel=0.01)


def test_every_preset_value_has_a_source_and_the_default_is_todays_model():
    presets = engine_presets()
    assert {"default", "vllm", "vllm-v0", "sglang", "tensorrt-llm"} <= set(presets)
    for preset in presets.values():
        for key in ("constant_s", "per_sequence_s", "per_layer_launch_s"):
            assert len(preset.sources[key]) > 20, (preset.name, key)
        assert preset.scheduler in ("chunked", "prefill_first")
    default = presets["default"]
    assert default.constant_s is None and default.per_sequence_s == 0.0
    assert default.scheduler == "chunked"
    assert EngineConfig().overhead_model() == EngineOverhead()
    # vllm-v0: the line through Vidur's TP-1 profile (1.39 ms at batch 8, 7.2 ms at batch 128)
    v0 = presets["vllm-v0"]
    assert v0.constant_s + 8 * v0.per_sequence_s == pytest.approx(1.39e-3, rel=0.04)
    assert v0.constant_s + 128 * v0.per_sequence_s == pytest.approx(7.2e-3, rel=0.04)


@pytest.mark.parametrize(("document", "fragment"), [
    ({"presets": {}}, "holds 'default'"),
    ({"presets": {"default": {"scheduler": "chunked"}}}, "expected exactly the keys"),
])
def test_a_malformed_presets_file_is_a_config_error(document, fragment):
    with pytest.raises(ConfigError, match=fragment):
        parse_presets(document, "engines.yaml")


def test_a_preset_value_out_of_range_is_a_config_error():
    good = {"engine": "x", "scheduler": "chunked", "constant_s": None, "per_sequence_s": 0.0,
            "per_layer_launch_s": None,
            "sources": {"constant_s": "a", "per_sequence_s": "b", "per_layer_launch_s": "c"}}
    with pytest.raises(ConfigError, match=r"presets.default.per_sequence_s: must be a number"):
        parse_presets({"presets": {"default": {**good, "per_sequence_s": -1}}}, "engines.yaml")
    with pytest.raises(ConfigError, match=r"presets.default.scheduler: must be one of"):
        parse_presets({"presets": {"default": {**good, "scheduler": "fcfs"}}}, "engines.yaml")
    with pytest.raises(ConfigError, match=r"every overhead value needs its source"):
        parse_presets({"presets": {"default": {**good, "sources": {}}}}, "engines.yaml")


BASE = scenario([synthetic({"kind": "poisson", "rate": 1.0}, {"kind": "fixed", "value": 100},
                           {"kind": "fixed", "value": 10}, num_requests=5)])


def rejected(**engine) -> str:
    cfg = {**BASE, "cluster": {**BASE["cluster"], "engine": engine}}
    with pytest.raises(ConfigError) as exc:
        parse_config(cfg, "scenario.yaml")
    return str(exc.value)


@pytest.mark.parametrize(("engine", "fragment"), [
    ({"preset": "vllm-v2"}, "cluster.engine.preset: unknown engine preset 'vllm-v2'; presets: default, sglang"),
    ({"scheduler": "fcfs"}, "cluster.engine.scheduler"),
    ({"overhead": {"constant_s": -0.001}}, "cluster.engine.overhead.constant_s"),
    ({"overhead": {"constant_s": 2.0}}, "cluster.engine.overhead.constant_s: must be at most 0.5 s"),
    ({"overhead": {"per_sequence_s": math.inf}}, "cluster.engine.overhead.per_sequence_s: must be at most 0.01 s"),
    ({"overhead": {"per_layer_launch_s": 1}}, "cluster.engine.overhead.per_layer_launch_s: must be at most 0.01 s"),
    ({"overhead": {"constant": 0.001}}, "cluster.engine.overhead.constant: unknown key"),
    ({"preset": "tensorrt-llm", "cuda_graphs": False}, "has no published one: set engine.overhead.per_layer_launch_s"),
])
def test_bad_engine_settings_are_config_errors_naming_the_key(engine, fragment):
    assert fragment in rejected(**engine)


def test_tensorrt_llm_without_cuda_graphs_takes_an_explicit_launch_cost():
    engine = EngineConfig(preset="tensorrt-llm", cuda_graphs=False, overhead={"per_layer_launch_s": 2e-5})
    assert engine.overhead_model().launch_per_layer_s == 2e-5


def test_an_unknown_preset_exits_2_from_the_command_line(tmp_path, capsys):
    import yaml
    cfg = {**BASE, "cluster": {**BASE["cluster"], "engine": {"preset": "trt"}}}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(cfg))
    code = main(["run", str(path), "--quiet", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and "cluster.engine.preset" in err
    assert "Traceback" not in err


# ------------------------------------------------------------------ per pool, and whole runs


def test_a_pool_sets_its_own_preset():
    cluster = ClusterConfig(model="llama-3-8b", gpu="a100-80gb", pools={
        "plain": PoolConfig(),
        "v0": PoolConfig(engine=EngineConfig(preset="vllm-v0")),
        "sg": PoolConfig(engine=EngineConfig(preset="sglang", scheduler="chunked", cuda_graphs=False)),
    })
    plain, v0, sg = (PoolSpec.resolve(n, cluster.pools[n], cluster) for n in ("plain", "v0", "sg"))
    assert plain.engine.batching == "chunked" and v0.engine.batching == "prefill_first"
    assert sg.engine.batching == "chunked"
    one = (0, 0.0, 16, 16 * 500.0)
    bare = IterationTimeModel(plain.model, plain.gpu, 1, overhead=EngineOverhead(constant_s=0.0)).iteration_time(*one)
    assert plain.iteration_time(*one) - bare == pytest.approx(Efficiency.for_gpu(plain.gpu).iteration_overhead_s)
    assert v0.iteration_time(*one) - bare == pytest.approx(0.000968 + 16 * 4.87e-05)
    assert sg.iteration_time(*one) - bare == pytest.approx(2.75e-05 * 32)


def test_pools_run_with_their_own_scheduler():
    stream = synthetic({"kind": "poisson", "rate": 4.0}, {"kind": "fixed", "value": 200},
                       {"kind": "fixed", "value": 30}, num_requests=40)
    cfg = scenario([stream], pool={"engine": {"preset": "vllm-v0"}})
    cfg["cluster"]["pools"]["other"] = {"instances": 1}
    sim = build_simulation(cfg)
    kinds = {pool: {type(i.scheduler) for i in insts} for pool, insts in sim.cluster.instances.items()}
    assert kinds == {"default": {PrefillFirstScheduler}, "other": {LocalScheduler}}
    sim.run()


@pytest.mark.parametrize("engine", [{"scheduler": "prefill_first"},
                                    {"preset": "vllm-v0", "cuda_graphs": False}])
def test_fast_forward_gives_identical_tables_with_prefill_first(engine):
    on = run(fast_forward_scenario(True, engine))
    off = run(fast_forward_scenario(False, engine))
    assert (on.events.kind == "preempt").sum() > 5, "the scenario must exercise preemption"
    assert (on.requests.status == "finished").sum() > 100
    for name in ("requests", "events", "instances", "summary"):
        assert_frame_equal(getattr(on, name), getattr(off, name), check_exact=True, obj=name)
    assert on.manifest["itl_histograms"] == off.manifest["itl_histograms"]
