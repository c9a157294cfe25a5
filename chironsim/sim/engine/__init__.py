"""The engine of one instance, in the pieces vLLM has (DESIGN §2, mechanisms).

:mod:`.scheduler` decides what the next iteration runs (swap-ins, decode growth and the
preemptions it forces, boundary mechanisms, prefill chunks, admissions) under the engine's
batching policy (``chunked``, or ``prefill_first``: prefill-only and decode-only iterations);
:mod:`.stretch` prices that batch and, when nothing else can happen, a whole stretch of
identical decode iterations at once (fast-forward). The SimPy loop that sleeps through them and
commits their effects is :class:`chironsim.sim.instance.Instance`.
"""
