"""The largest (and smallest) numbers a scenario may hold, one named constant each.

Every number a user writes that sizes work or memory (how many requests, instances, samples,
policy ticks, tokens) is bounded here, at the boundary, so that a typo such as ``rate: .inf``
or ``sample_interval_s: 1e-6`` is a located config error instead of a run that grows memory
until it is killed. The bounds are chosen from what a real deployment could mean, with room
to spare; each line says why. The schema modules import them, so changing one changes both
the check and its message.
"""

from __future__ import annotations

# --- traffic ---------------------------------------------------------------------------------

#: arrivals/s of one stream: ~1,000x the busiest public LLM traces (Azure, BurstGPT peak below
#: 100 req/s per deployment); beyond it only the simulator's memory would be measured.
MAX_RATE = 100_000.0
#: a positive rate below one arrival per ~12 days means a unit mistake; it also keeps a
#: generator's time step (chunk ÷ rate) finite.
MIN_POSITIVE_RATE = 1e-6
#: requests one stream (or the whole workload) may generate: twice a production week
#: (~27M requests, DESIGN §9); every request is held in memory (~2 KB) until the run ends.
MAX_REQUESTS = 50_000_000
#: the burstiest published LLM inter-arrival CVs are below ~10; past 100 the gamma shape
#: (1/CV²) underflows and the process no longer has the requested mean.
MAX_GAMMA_CV = 100.0
#: below 0.001 arrivals are periodic to within 0.1 % (use it for a clock-like load); far below
#: it 1/CV² overflows.
MIN_GAMMA_CV = 1e-3
#: on/off and diurnal periods shorter than a millisecond are shorter than one engine
#: iteration; they describe no real traffic and cost one generator step each.
MIN_PERIOD_S = 1e-3

# --- time ------------------------------------------------------------------------------------

#: any time, duration, deadline or window: one (leap) year of simulated time; anything longer
#: is a unit mistake (ms for s).
MAX_TIME_S = 366 * 86_400.0
#: cold-start phases (node provisioning, engine start-up): a day is far past any real one.
MAX_LIFECYCLE_S = 86_400.0
#: timeseries sampling: finer than a millisecond is finer than any engine iteration.
MIN_SAMPLE_INTERVAL_S = 1e-3
#: autoscaler and local-controller intervals: the same floor; real controllers tick every
#: 0.1-60 s, and an interval of 1e-9 s would be a billion ticks per simulated second.
MIN_POLICY_INTERVAL_S = 1e-3
#: policy ticks per controller, or on/off periods per stream, over one run: each costs time,
#: not memory (~20 µs a tick: 100M is about half an hour of policy work). A production week
#: polled every 0.05 s (Llumnix) is 12M ticks.
MAX_PERIODIC_EVENTS = 100_000_000
#: timeseries rows over one run (samples × pools): each is held in memory (~550 B) until the run
#: ends and then built into a table; 2M rows are ~1 GB, a week sampled every second in 3 pools.
MAX_TIMESERIES_ROWS = 2_000_000

# --- cluster ---------------------------------------------------------------------------------

#: instances in one pool (at t = 0, min or max): the largest single-model fleets are a few
#: thousand GPUs; each simulated instance costs memory and per-tick work.
MAX_INSTANCES = 10_000
#: tokens in one request (prompt or output, any length parameter): the longest context
#: windows offered today are 1-10M tokens (Llama 4 Scout: 10M); also keeps counts in int64.
MAX_TOKENS = 10_000_000
#: sequences in one batch: vLLM's practical maximum is a few thousand (Chiron: up to 4,096).
MAX_NUM_SEQS = 65_536
#: tokens per KV block: vLLM's kernels use 8-128 (a few backends 256); more is a mistake.
MAX_BLOCK_SIZE = 1_024
#: host or device memory per GPU (GiB): past any GPU's HBM and any host's share per GPU.
MAX_MEMORY_GIB = 4_096.0
#: weight-store and KV-transfer bandwidths (GB/s): 10 MB/s is slower than any network disk
#: (a 16 GB model would take half an hour), 100 TB/s faster than any fabric.
MIN_BANDWIDTH_GBPS = 0.01
#: stages of one live migration: each is a copy round (Llumnix uses 3); past 100 the request's
#: new blocks outpace the copy and the migration can never converge anyway.
MAX_MIGRATION_STAGES = 100
#: fixed latency of one KV transfer stage (s): RPCs and launches are milliseconds; a second
#: is already longer than any migration the paper measured (~tens of ms).
MAX_STAGE_LATENCY_S = 1.0
MAX_BANDWIDTH_GBPS = 100_000.0

#: instances in one fused group (KunServe): each stage must keep at least one layer, and the
#: deepest model in the catalog (Llama-3.1-405B) has 126; past a few dozen stages the pipeline
#: is all hops.
MAX_GROUP_SIZE = 64
#: samples one usage window holds per instance (KunServe): a window of an hour sampled every
#: 0.05 s; the released code's is 30.
MAX_WINDOW_SAMPLES = 100_000

# --- identities ------------------------------------------------------------------------------

#: seeds are stored as int64 in the sweep tables.
MAX_SEED = 2**63 - 1
#: class priorities are a handful of levels; the bound keeps them in int32 columns.
MAX_PRIORITY = 1_000_000
#: a results folder name: one path component a person can type.
MAX_NAME_LENGTH = 100

# --- distributions ---------------------------------------------------------------------------

#: lognormal σ (log space): measured LLM length distributions have σ ≈ 0.5-2; σ = 10 already
#: spans ten orders of magnitude between the 1st and 99th percentile.
MAX_LOGNORMAL_SIGMA = 10.0
#: trace replay speed-up (rate_scale): more than 1,000x faster or slower than recorded no
#: longer describes the traced service (an hour would become 3.6 s or 6 weeks).
MIN_RATE_SCALE = 1e-3
MAX_RATE_SCALE = 1_000.0

# --- engine overhead -------------------------------------------------------------------------

#: an engine's constant cost per iteration (s): the largest published is ~8.5 ms (vLLM with Ray
#: workers at TP 4, Vidur's profile); half a second is a unit mistake (ms for s).
MAX_ENGINE_OVERHEAD_S = 0.5
#: an engine's cost per sequence in an iteration, or per layer launched without CUDA graphs (s):
#: published figures are 27-49 us; 10 ms would make a 256-sequence decode step take 2.6 s.
MAX_ENGINE_OVERHEAD_TERM_S = 0.01
