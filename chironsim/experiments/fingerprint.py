"""What a scenario is, as one hash: its resolved config and the bytes of every file it reads.

A sweep point is reused when its identity matches, and a regression baseline is compared only
against the scenario it was recorded from; both go wrong if a trace is edited behind the
config's back. The config alone is not enough, so each identity also covers the content of the
files the workload reads (traces, empirical length tables), hashed in full.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

from chironsim.errors import ConfigError

if TYPE_CHECKING:
    from chironsim.experiments.config import ScenarioConfig

_CHUNK = 1 << 20


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes, read in chunks (traces can be gigabytes)."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the file ({err.strerror or err})") from None
    return digest.hexdigest()


def input_digests(config: "ScenarioConfig", base_dir: Path) -> dict[str, str]:
    """Config key of each file the scenario reads → SHA-256 of its content."""
    from chironsim.workload.build import workload_files

    return {key: file_digest(path) for key, path, *_ in workload_files(config.workload, base_dir)}


def config_json(config: "ScenarioConfig", *, exclude_defaults: bool = False) -> str:
    """Canonical JSON of a resolved config (sorted keys, no spaces).

    ``exclude_defaults`` keeps only what differs from the schema's defaults: the scenario as a
    user pinned it, which stays the same when the schema grows a new key with a default.
    """
    data = config.model_dump(mode="json", exclude_defaults=exclude_defaults)
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def scenario_fingerprint(config: "ScenarioConfig", base_dir: Path, *,
                         exclude_defaults: bool = False) -> str:
    """SHA-256 (hex) over the canonical config JSON and the digest of every input file."""
    payload = {"config": config_json(config, exclude_defaults=exclude_defaults),
               "inputs": input_digests(config, base_dir)}
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
