"""The contract policies and the simulator share, below both (DESIGN §2, mechanisms).

:mod:`.states` (instance lifecycle), :mod:`.views` (frozen snapshots policies read),
:mod:`.actions` (what policies ask for, an open registry of types that validate themselves)
and :mod:`.protocols` (Router, Autoscaler). ``sim/`` and ``policies/`` both import from here
and never from each other, so a policy is testable without SimPy and the simulator knows no
policy.
"""
