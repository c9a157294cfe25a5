"""Reading config YAML so that every later problem can name the file and line it came from.

Validation happens on plain data, long after parsing, so the YAML node tree is kept alongside
the data and :class:`Locator` maps a key path back to its line (or to the ``--set`` that wrote
it). PyYAML also silently keeps the last of two equal keys; here that is an error, since the
first value a user wrote would otherwise be ignored without a word.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from chironsim.errors import ConfigError
from chironsim.experiments.messages import KeyPath, dotted


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key != "<<" and key in seen:
                raise ConfigError(f"{self.name}:{line}: key {key!r} is given twice "
                                  f"(first on line {seen[key]})")
            seen[key] = line
        return super().construct_mapping(node, deep)


def read_yaml(path: Path) -> tuple[Any, yaml.Node | None]:
    """The file's data and its node tree (for line numbers); errors name the file and line."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read the config file ({err})") from None
    try:
        loader = _StrictLoader(text)
        loader.name = str(path)
        try:
            root = loader.get_single_node()
            data = None if root is None else loader.construct_document(root)
        finally:
            loader.dispose()
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: not valid YAML ({getattr(err, 'problem', None) or err})") from None
    return data, root


def yaml_line(root: yaml.Node, path: KeyPath) -> int | None:
    """Line of the deepest key of ``path`` present in the YAML (its parent's, for a missing key)."""
    node, line = root, None
    for part in path:
        if isinstance(node, yaml.MappingNode):
            hit = next(((k, v) for k, v in node.value if getattr(k, "value", None) == str(part)), None)
            if hit is None:
                break
            line, node = hit[0].start_mark.line + 1, hit[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


class Locator:
    """Says where a key came from: ``FILE:LINE`` of its YAML, or the ``--set`` that made it.

    Callers that assemble a config from several places (a sweep's grid, an inline base)
    subclass it and override ``__call__`` so that each problem is blamed on the right source.
    """

    def __init__(self, source: str, root: yaml.Node | None = None,
                 overrides: dict[str, str] | None = None) -> None:
        self.source = source
        self.root = root
        self.overrides = overrides or {}

    def __call__(self, path: KeyPath) -> str:
        key = dotted(path)
        for set_key, item in self.overrides.items():
            if key == set_key or key.startswith((set_key + ".", set_key + "[")):
                return f"--set {item}"
        line = yaml_line(self.root, path) if self.root is not None else None
        return f"{self.source}:{line}" if line else self.source

    def report(self, problems: list[tuple[KeyPath, str]]) -> ConfigError:
        """One ConfigError listing every problem, each prefixed by where it is."""
        lines = [f"{self(path)}: {dotted(path) + ': ' if path else ''}{msg}" for path, msg in problems]
        if len(lines) == 1:
            return ConfigError(lines[0])
        head = f"{self.source}: {len(lines)} problems in the configuration"
        return ConfigError("\n  ".join([head, *lines]))
