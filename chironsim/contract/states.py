"""Instance lifecycle states, in order (DESIGN §2).

Plain strings, so views stay cheap to build and compare; the simulator moves an instance
through them and policies read them from views.
"""

from __future__ import annotations

PROVISIONING = "provisioning"
LOADING = "loading"
READY = "ready"
DRAINING = "draining"
STOPPED = "stopped"
#: A follower of a fused group (KunServe's parameter drop): it holds its share of the group's
#: layers and KV, is billed, and takes no request of its own (the group's leader does).
FUSED = "fused"
LIFECYCLE_STATES = (PROVISIONING, LOADING, READY, DRAINING, STOPPED, FUSED)
