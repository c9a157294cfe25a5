"""chironsim: a discrete-event simulator of LLM serving clusters.

    >>> import chironsim
    >>> result = chironsim.run("configs/quickstart.yaml")   # doctest: +SKIP
    >>> result.summary[["request_class", "slo_attainment", "ttft_p99"]]  # doctest: +SKIP

The entry points load lazily, so importing a light subpackage (``chironsim.catalog``,
``chironsim.policies``) does not pull in the simulator and SimPy.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Result", "load_result", "run"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name == "run":
        from chironsim.experiments.runner import run

        return run
    if name in ("Result", "load_result"):
        from chironsim.experiments import result

        return getattr(result, name)
    raise AttributeError(f"module 'chironsim' has no attribute {name!r}")
