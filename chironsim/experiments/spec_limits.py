"""Size limits of a sweep spec, checked before anything is copied, validated or hashed.

YAML aliases let a few lines stand for an exponentially large value (the "billion laughs":
nine lists of nine references to the previous list). PyYAML builds such a value cheaply as a
graph of shared objects, but every later step that walks it (validation, labels, hashing)
walks the full tree, and a grid value like that used to take gigabytes and then crash. Each
part of a spec is therefore measured as the tree it stands for, stopping as soon as it passes
the limit, so the check itself costs at most the limit. The number of grid points is bounded
too: a point is a simulation, and a typo (``replications: 100000000``) should not first
expand a hundred million configs.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from chironsim.experiments.messages import KeyPath

#: Values (scalars, lists, mappings) one part of a spec may expand to: a grid key's value list,
#: a variant, the base scenario. Real ones are a few hundred; a long rate schedule a few
#: thousand.
MAX_NODES = 100_000
#: Grid points one sweep may have (each is one simulation run).
MAX_POINTS = 100_000


def expands_beyond(value: Any, limit: int = MAX_NODES) -> bool:
    """True when ``value``, with every alias expanded, has more than ``limit`` nodes."""
    count = 0
    stack = [value]
    while stack:
        node = stack.pop()
        count += 1
        if count > limit:
            return True
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, (list, tuple)):
            stack.extend(node)
    return False


def _parts(data: dict[Any, Any]) -> Iterator[tuple[KeyPath, Any]]:
    """The parts measured one by one, so that an error points at the one that is too big."""
    for key, value in data.items():
        if key in ("grid", "variants") and isinstance(value, dict):
            for name, inner in value.items():
                yield (key, name), inner
        else:
            yield (key,), value


def oversized_parts(data: Any, what: str = "sweep spec") -> list[tuple[KeyPath, str]]:
    """``(key path, problem)`` for each part of ``data`` that expands beyond :data:`MAX_NODES`."""
    if not isinstance(data, dict):
        return [((), f"expands to more than {MAX_NODES:,} values")] if expands_beyond(data) else []
    return [(path, f"expands to more than {MAX_NODES:,} values (YAML aliases nested inside one "
                   f"another?); a {what} must stay small")
            for path, value in _parts(data) if expands_beyond(value)]
