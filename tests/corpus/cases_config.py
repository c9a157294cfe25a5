"""Config mistakes: schema, bounds, names, cross references, YAML and ``--set``."""

from __future__ import annotations

from corpus.case import Case, changed, light_scenario, run_case

BASE = light_scenario()

CASES: list[Case] = [
    run_case("unknown-key", changed(BASE, **{"cluster.pools.default.instancez": 2}),
             ["scenario.yaml:", "cluster.pools.default.instancez", "unknown key"]),
    run_case("wrong-type", changed(BASE, **{"cluster.pools.default.instances": "two"}),
             ["scenario.yaml:", "cluster.pools.default.instances", "whole number"]),
]
