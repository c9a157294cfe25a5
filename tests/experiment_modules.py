"""Load a script (an experiment's, a benchmark's) as a module under a name of its own.

Every experiment folder has its ``run.py`` and ``tables.py``; importing them by their plain
names from several test files would hand each test whichever folder's module was imported
first. Sibling modules with unique names (``serving``, ``k1``, ...) are imported normally by
the scripts, from the folder the loader puts on ``sys.path``.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


def load(folder: str, name: str) -> ModuleType:
    """``experiments/<folder>/<name>.py`` as module ``<folder>_experiment_<name>``."""
    path = EXPERIMENTS / folder
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
    return load_script(path / f"{name}.py", f"{folder}_experiment_{name}")


def load_script(path: Path, key: str) -> ModuleType:
    """The script at ``path`` as module ``key`` (loaded once per session)."""
    if key in sys.modules:
        return sys.modules[key]
    spec = importlib.util.spec_from_file_location(key, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[key] = module
    spec.loader.exec_module(module)
    return module
