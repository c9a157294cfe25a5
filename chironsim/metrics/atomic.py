"""Atomic writes through hidden temporaries that name the process writing them.

Every result file and folder is first written to a hidden sibling and renamed into place once
complete, so a reader never sees half a file under its real name. A writer that is killed
leaves its temporary behind. Each temporary's name therefore carries the writer's process id
and host, ``.NAME.tmp-PID@HOST~RANDOM`` (``.old-`` for a folder being replaced), so that a later
writer removes exactly the temporaries whose process is gone, and never one that a live
process (on this machine, or another machine sharing the folder) is still filling.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

TMP, OLD = "tmp", "old"
_TAGGED = re.compile(r"^\..+\.(?:tmp|old)-(\d+)@([^~/]*)~[^/]*$")


def _host() -> str:
    """This machine's name as it appears in temporary names (no ``@``, ``~`` or separators)."""
    return re.sub(r"[^A-Za-z0-9.-]", "_", socket.gethostname()) or "localhost"


def temp_prefix(name: str, kind: str = TMP) -> str:
    """Prefix of a hidden temporary for ``name`` written by this process."""
    return f".{name}.{kind}-{os.getpid()}@{_host()}~"


def is_temporary(name: str) -> bool:
    """True for any hidden temporary a chironsim writer makes (tagged or from older versions)."""
    return name.startswith(".") and (f".{TMP}-" in name or f".{OLD}-" in name)


def process_alive(pid: int) -> bool:
    """Whether a process with this id exists on this machine (a zombie counts as alive)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists but belongs to someone else
        return True
    return True


def stale_temporaries(folder: Path, untagged: bool = False) -> list[Path]:
    """Temporaries in ``folder`` whose writer was a process of this machine that is gone.

    ``untagged`` also counts temporaries without a writer tag (made by older versions); only a
    caller that knows it is the folder's only writer (a sweep, in its own folder) may say so.
    """
    stale = []
    host = _host()
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return []
    for entry in entries:
        match = _TAGGED.match(entry.name)
        if match is not None:
            if match.group(2) == host and not process_alive(int(match.group(1))):
                stale.append(Path(entry.path))
        elif untagged and is_temporary(entry.name):
            stale.append(Path(entry.path))
    return stale


def remove_stale_temporaries(folder: Path, untagged: bool = False) -> list[Path]:
    """Delete :func:`stale_temporaries` (another cleaner racing us is harmless); returns them."""
    removed = stale_temporaries(folder, untagged)
    for path in removed:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return removed


def umask_mode() -> int:
    """Mode of an ordinary new file (mkstemp makes 0600, too strict for shared results)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def replace_from_temp(path: Path, write: Any) -> None:
    """Call ``write(tmp_path)``, then rename the finished temporary over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path.name), dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, umask_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_text_synced(tmp: Path, text: str) -> None:
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def write_text_atomic(path: Path, text: str) -> None:
    """Write a text file so that it is either complete or absent under its name."""
    replace_from_temp(path, lambda tmp: _write_text_synced(tmp, text))


def write_json_atomic(path: Path, data: Any) -> None:
    """Write indented JSON atomically (values JSON cannot hold are written as strings)."""
    write_text_atomic(path, json.dumps(data, indent=2, default=str) + "\n")


def write_parquet_atomic(frame: pd.DataFrame, path: Path) -> None:
    """Write a table atomically as Parquet."""
    replace_from_temp(path, lambda tmp: frame.to_parquet(tmp, engine="pyarrow", index=False))
