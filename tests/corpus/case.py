"""What one bad-input case is, and the scenario files cases start from."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import scenarios
import yaml


@dataclass(frozen=True)
class Case:
    """One user mistake.

    ``files`` maps paths relative to a fresh folder to their contents (text, bytes, or a dict
    dumped as YAML); ``argv`` is the ``chironsim`` command line run in that folder.
    ``expect`` are fragments the error message must contain: the location (``scenario.yaml:7``,
    ``--set seed.foo=1``, a key path) and what was expected. ``mutates`` names files the
    command is allowed to change (none by default: "nothing written" means the folder is left
    exactly as it was).
    """

    name: str
    files: dict[str, str | bytes | dict[str, Any]]
    argv: list[str]
    expect: list[str]
    timeout_s: float = 60.0
    mutates: tuple[str, ...] = field(default_factory=tuple)

    def __str__(self) -> str:  # pytest ids
        return self.name


def light_scenario(**top: Any) -> dict[str, Any]:
    """A valid scenario that simulates in a fraction of a second (cases mutate a copy)."""
    data = scenarios.light_scenario("corpus", seed=1, duration_s=20, output={"plots": False})
    data.update(copy.deepcopy(top))
    return data


def changed(data: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """A copy of ``data`` with dotted-key changes (``"cluster.pools.default.tp": 3``);
    list entries by index (``"workload.streams.0.arrival.rate"``)."""
    data = copy.deepcopy(data)
    for key, value in changes.items():
        node: Any = data
        *parents, last = key.split(".")
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
        node[int(last) if isinstance(node, list) else last] = value
    return data


def as_yaml(data: dict[str, Any]) -> str:
    return yaml.safe_dump(data, sort_keys=False)


def run_case(name: str, data: dict[str, Any], expect: list[str], *extra: str,
             **options: Any) -> Case:
    """The common shape: ``chironsim run scenario.yaml --quiet --out results/x`` on ``data``."""
    return Case(name, {"scenario.yaml": as_yaml(data)},
                ["run", "scenario.yaml", "--quiet", "--out", "results/x", *extra], expect, **options)
