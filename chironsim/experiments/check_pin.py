"""What ``chironsim check --update`` records beside the values: the scenario and the metric set.

A baseline's numbers mean something only for the scenario they were measured on and only as far
as the metrics they list reach. Without a record of both, the gate can be weakened by an edit
that looks harmless in review: switch the scenario's policy (or edit the trace it reads) and the
old numbers still "pass" as long as the new ones happen to land in the bands; delete a metric
line or a class block and whatever regressed there is no longer looked at. So ``--update``
writes a ``pinned:`` record after the baseline::

    pinned:
      scenario_fingerprint: 3c1f...   # SHA-256 of the resolved config and every input file
      config: {classes: 9a0e..., cluster: 41bd..., policy: 77c2..., ...}   # per section
      inputs: {workload.streams[0].path: 5e8a...}                          # per file read
      metrics:                        # the (class, metric) keys the baseline pinned
        interactive: [slo_attainment, ttft_p50, ttft_p99, tpot_p50, tpot_p99, e2e_p99]
        cluster: [gpu_hours]
      seal: d04b...                   # SHA-256 of everything above

``chironsim check`` recomputes the fingerprint: a different one is a regression failure (the
numbers no longer measure the pinned scenario), reported with the config sections and input
files that changed, and accepted only by running ``--update`` again. The per-section and
per-file digests are short (16 hex digits) because they only say *what* changed; the full
fingerprint decides *whether* it did. The metric set must equal the baseline's keys, and the
seal makes a hand edit of the record itself (deleting a metric from both places) an error too.

The fingerprint leaves out config keys at their schema defaults (``exclude_defaults=True``): a
grown schema (a new key with a default) is not a changed scenario and must not invalidate every
baseline, while a changed default that changes results is caught by the values themselves.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError

from chironsim.config_base import StrictModel
from chironsim.experiments.config import ScenarioConfig
from chironsim.experiments.fingerprint import input_digests, scenario_fingerprint

#: The regression file's key for the record.
PIN_KEY = "pinned"
_SHORT = 16
_HEX64 = r"^[0-9a-f]{64}$"
_HEX16 = rf"^[0-9a-f]{{{_SHORT}}}$"
_PLAIN = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
_HEADER = """\
# Recorded by `chironsim check --update`; do not edit. `chironsim check` fails
# when the scenario (its config or an input file) or the pinned metric set has
# changed since; after a deliberate change, run `chironsim check FILE --update`."""
#: A problem with a regression file: (key path, message), as check.py reports them.
Problem = tuple[tuple, str]


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _canonical(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class Pin:
    """The record: the scenario's fingerprint, its diagnostic parts, and the metric set."""

    scenario_fingerprint: str
    config: Mapping[str, str]
    inputs: Mapping[str, str]
    metrics: Mapping[str, tuple[str, ...]]

    @property
    def seal(self) -> str:
        """SHA-256 over the record, so that editing any part of it by hand is noticed."""
        return _sha(_canonical({"scenario_fingerprint": self.scenario_fingerprint,
                                "config": dict(self.config), "inputs": dict(self.inputs),
                                "metrics": {k: list(v) for k, v in self.metrics.items()}}))


class _PinSpec(StrictModel):
    """The ``pinned:`` record as the YAML must hold it."""

    scenario_fingerprint: str = Field(pattern=_HEX64)
    config: dict[str, str]
    inputs: dict[str, str]
    metrics: dict[str, list[str]]
    seal: str = Field(pattern=_HEX64)


def record(config: ScenarioConfig, base_dir: Path,
           metrics: Mapping[str, tuple[str, ...]]) -> Pin:
    """The record of ``config`` (and the files it reads) with the baseline's metric set."""
    sections = config.model_dump(mode="json", exclude_defaults=True)
    return Pin(
        scenario_fingerprint=scenario_fingerprint(config, base_dir, exclude_defaults=True),
        config={key: _sha(_canonical(value))[:_SHORT] for key, value in sections.items()},
        inputs={key: digest[:_SHORT] for key, digest in input_digests(config, base_dir).items()},
        metrics={group: tuple(names) for group, names in metrics.items()},
    )


def _scalar(text: str) -> str:
    """``text`` as a YAML scalar that reads back as the same string (quoted only if needed)."""
    if _PLAIN.match(text) and yaml.safe_load(text) == text:
        return text
    return json.dumps(text)  # a JSON string is a valid double-quoted YAML scalar


def render(pin: Pin, comment: bool) -> str:
    """The ``pinned:`` block as YAML text (no trailing newline); ``comment`` adds the header."""
    lines = []
    if comment:
        lines += _HEADER.splitlines()
    lines += [f"{PIN_KEY}:", f"  scenario_fingerprint: {pin.scenario_fingerprint}"]
    for name, digests in (("config", pin.config), ("inputs", pin.inputs)):
        if not digests:
            lines.append(f"  {name}: {{}}")
            continue
        lines.append(f"  {name}:")
        lines += [f"    {_scalar(key)}: {digest}" for key, digest in digests.items()]
    lines.append("  metrics:")
    for group, names in pin.metrics.items():
        lines.append(f"    {_scalar(group)}: [{', '.join(_scalar(n) for n in names)}]")
    lines.append(f"  seal: {pin.seal}")
    return "\n".join(lines)


def parse(raw: Any, update: str) -> tuple[Pin | None, list[Problem]]:
    """The record a file holds, or the problems that make it unusable (keys under ``pinned``).

    ``update`` is the command that records it again, for the messages.
    """
    try:
        spec = _PinSpec.model_validate(raw)
    except ValidationError as err:
        problems = []
        for error in err.errors():
            loc = (PIN_KEY, *error["loc"])
            if error["type"] == "string_pattern_mismatch":
                msg = "must be a SHA-256 hex digest as --update writes it"
            elif error["type"] == "missing":
                msg = "missing (the record is incomplete)"
            elif error["type"] in ("dict_type", "model_type", "list_type", "string_type"):
                msg = "not what --update writes (the record was edited by hand)"
            else:
                msg = error["msg"]
            problems.append((loc, f"{msg}; record it again with '{update}'"))
        return None, problems
    problems = [((PIN_KEY, part, key), f"must be a {_SHORT}-digit hex digest as --update writes "
                  f"it; record it again with '{update}'")
                for part in ("config", "inputs") for key, value in getattr(spec, part).items()
                if not re.match(_HEX16, value)]
    if problems:
        return None, problems
    pin = Pin(spec.scenario_fingerprint, spec.config, spec.inputs,
              {group: tuple(names) for group, names in spec.metrics.items()})
    if pin.seal != spec.seal:
        return None, [((PIN_KEY, "seal"), "does not match the record: the record was edited by "
                       "hand since --update wrote it (it pins the scenario and the metric set, so "
                       "an edit could weaken the gate unnoticed); if the "
                       f"baseline is right as it stands, record it again with '{update}'")]
    return pin, []


def metric_set_problems(pin: Pin, baseline: Mapping[str, Mapping[str, Any]],
                        update: str) -> list[Problem]:
    """Baseline keys that differ from the pinned metric set: deleted ones weaken the gate.

    ``update`` is the command that accepts the current set deliberately, for the messages.
    """
    accept = f"restore it, or accept the smaller set deliberately with '{update}'"
    problems: list[Problem] = []
    for group, names in pin.metrics.items():
        if group not in baseline:
            problems.append((("baseline", group), f"class block deleted: --update pinned "
                             f"{len(names)} metric(s) of {group!r} ({', '.join(names)}), and "
                             f"without them the gate no longer looks at this class; {accept}"))
            continue
        for name in names:
            if name not in baseline[group]:
                problems.append((("baseline", group, name), "metric deleted: --update pinned it, "
                                 f"and without it the gate no longer looks at it; {accept}"))
    for group, metrics in baseline.items():
        for name in metrics:
            if name not in pin.metrics.get(group, ()):
                problems.append((("baseline", group, name), "not in the metric set --update "
                                 f"pinned; pin it with '{update}'"))
    return problems


def _diff(then: Mapping[str, str], now: Mapping[str, str],
          shown: Callable[[str], str], gone: str, new: str) -> list[str]:
    out = []
    for key in sorted(set(then) | set(now)):
        if key not in now:
            out.append(f"{shown(key)} {gone}")
        elif key not in then:
            out.append(f"{shown(key)} {new}")
        elif then[key] != now[key]:
            out.append(f"{shown(key)} changed")
    return out


def scenario_changes(then: Pin, now: Pin, paths: Mapping[str, Path]) -> tuple[str, ...]:
    """What differs between the pinned scenario and the current one (empty: unchanged).

    ``paths`` maps each input file's config key to the file, so the message can name it.
    """
    if then.scenario_fingerprint == now.scenario_fingerprint:
        return ()
    # A section left entirely at its defaults is not in the dump (exclude_defaults), so
    # switching to the default policy, say, shows as that section going back to defaults.
    changes = _diff(then.config, now.config, lambda key: f"config: {key}",
                    "changed (now all at defaults)", "changed (was all at defaults)")
    changes += _diff(then.inputs, now.inputs,
                     lambda key: f"input file {key}" + (f" ({paths[key]})" if key in paths else ""),
                     "no longer read", "newly read")
    # Same parts but another fingerprint: the fingerprint itself is computed differently now
    # (a newer chironsim); the scenario may well be the same, but only --update can say so.
    return tuple(changes) or ("scenario fingerprint differs although no recorded part does "
                              "(computed by another version of chironsim?)",)
