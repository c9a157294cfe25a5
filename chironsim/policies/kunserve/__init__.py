"""KunServe (Cheng et al., arXiv 2412.18169; EuroSys 2026): the decision logic, as pure functions.

One module each: :mod:`.config` (every parameter, documented, with its source), :mod:`.sample`
(the small per-instance usage sample the logic reads), :mod:`.window` (the 15 s usage window and
its "falling" test), :mod:`.triggers` (drop and restore decisions, per group or for all groups),
:mod:`.dispatch` (group, then micro-batch queue; prefill placement and decode rebalancing), and
:mod:`.plan` (static groups and the greedy drop plan, a reconstruction). Specification:
``reference/README.md`` (KunServe) with issue 10's corrections; evidence
``reference/llumnix_kunserve.md`` part B. Nothing here imports SimPy or ``chironsim.sim``;
:mod:`.policy` turns the decisions into the fused-group mechanism's actions (registered as
``kunserve``).
"""
