"""Worker processes that end when the sweep that started them is gone.

A local sweep's workers are separate processes. When the sweep itself is killed outright
(SIGKILL, the job scheduler's time limit, an out-of-memory kill) nothing runs in it to stop
them: they used to go on with the points already queued to them and then wait for work
forever, racing a restarted sweep for the same result folders. Each worker therefore asks the
Linux kernel to send it SIGKILL when its parent dies, and, on every platform, watches its
parent's process id from a daemon thread and exits when it changes (the orphan was adopted by
another process). A worker killed mid-run leaves only a hidden temporary, which the next sweep
removes.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time

#: prctl option (linux/prctl.h): signal to deliver when the parent thread dies.
PR_SET_PDEATHSIG = 1
#: How often the fallback watchdog looks at the parent's id.
WATCH_INTERVAL_S = 0.5


def die_with_parent(parent_pid: int) -> None:
    """Process-pool initializer: make this worker end soon after ``parent_pid`` ends."""
    if sys.platform.startswith("linux"):
        _kernel_death_signal()
    if os.getppid() != parent_pid:  # the parent died before the request took effect
        os._exit(1)
    threading.Thread(target=_watch, args=(parent_pid,), name="chironsim-parent-watch",
                     daemon=True).start()


def _kernel_death_signal() -> None:
    """``prctl(PR_SET_PDEATHSIG, SIGKILL)``; the watchdog still covers a failure here."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _watch(parent_pid: int) -> None:
    while True:
        time.sleep(WATCH_INTERVAL_S)
        if os.getppid() != parent_pid:
            os._exit(1)
