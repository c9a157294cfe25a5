"""Llumnix (Sun et al., OSDI 2024): the decision logic, as pure functions of load reports.

One module each: :mod:`.freeness` (the formulas), :mod:`.dispatch` (freest instance,
INFaaS++-like, round-robin), :mod:`.pairing` (migration sources, destinations and the request
to move), :mod:`.scaling` (add one instance, or drain the one with the fewest running requests),
:mod:`.config` (every parameter, documented). They read only
:class:`chironsim.contract.load.LoadReport` snapshots, polled every ``poll_interval`` and stale
in between as in Llumnix, and return plain decision records; they import neither SimPy nor
``chironsim.sim``. Turning the records into engine actions (live migration, drain) and
registering the policy is the wiring step's job.
"""
