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
    """SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last silently)
    and a list or mapping used as a key."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                hash(key)
            except TypeError:  # PyYAML itself would say so, but only after this check
                raise ConfigError(f"{self.name}:{line}: a key must be a plain name, not a "
                                  f"{'list' if isinstance(key, list) else 'mapping'}") from None
            if key != "<<" and key in seen:
                raise ConfigError(f"{self.name}:{line}: key {key!r} is given twice "
                                  f"(first on line {seen[key]})")
            seen[key] = line
        return super().construct_mapping(node, deep)


def read_yaml(path: Path) -> tuple[Any, yaml.Node | None]:
    """The file's data and its node tree (for line numbers); errors name the file and line."""
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the config file ({err.strerror or err})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        column = err.start - (raw.rfind(b"\n", 0, err.start) + 1) + 1
        raise ConfigError(f"{path}:{line}: not valid UTF-8 (byte 0x{raw[err.start]:02x} at column "
                          f"{column}); save the file as UTF-8") from None
    try:
        loader = _StrictLoader(text)
        loader.name = str(path)
        try:
            root = loader.get_single_node()
            data = None if root is None else loader.construct_document(root)
        finally:
            loader.dispose()
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}{_yaml_problem(err, text)}") from None
    return data, root


def _yaml_problem(err: yaml.YAMLError, text: str) -> str:
    """``:LINE: not valid YAML (...)`` with LINE where the user's mistake starts.

    PyYAML marks where it *noticed* the problem, which for an unclosed quote is the end of the
    file (or wherever a later quote happens to close it). The line reported here is the start
    of what it was scanning (an unclosed quote, a key missing its colon) or the opening quote
    of a string that runs over several lines before the problem, the usual missing-quote
    mistake, or the opening bracket of a ``[...]``/``{...}`` left open on an earlier line;
    otherwise PyYAML's own mark.
    """
    if isinstance(err, yaml.reader.ReaderError):
        line = text.count("\n", 0, err.position) + 1
        return (f":{line}: not valid YAML (character {chr(err.character)!r} is not allowed in "
                "YAML text)")
    problem = getattr(err, "problem", None) or str(err)
    mark = getattr(err, "problem_mark", None)
    context, context_mark = getattr(err, "context", None), getattr(err, "context_mark", None)
    if mark is None:
        return f": not valid YAML ({problem})"
    quote = _open_quote_line(text, mark)
    if quote is not None:
        return (f":{quote}: not valid YAML ({problem} on line {mark.line + 1}; the quoted string "
                f"opened on line {quote} runs on to later lines: is its closing quote missing?)")
    if isinstance(err, yaml.scanner.ScannerError) and context_mark is not None:
        hint = "; is a closing quote missing?" if "quoted scalar" in (context or "") else ""
        return (f":{context_mark.line + 1}: not valid YAML ({problem} on line {mark.line + 1}, "
                f"{context} that starts on this line{hint})")
    if context_mark is not None and "flow" in (context or "") and context_mark.line < mark.line:
        return (f":{context_mark.line + 1}: not valid YAML ({problem} on line {mark.line + 1}, "
                f"{context} opened on this line: is its closing bracket missing?)")
    return f":{mark.line + 1}: not valid YAML ({problem})"


def _open_quote_line(text: str, mark: yaml.Mark) -> int | None:
    """Line of the first quoted string before ``mark`` that spans lines, or of a quoted
    string still open at ``mark``: in a config file both are almost always a missing quote."""
    try:
        for token in yaml.scan(text, Loader=yaml.SafeLoader):
            if token.start_mark.index >= mark.index:
                return None
            if (isinstance(token, yaml.ScalarToken) and token.style in ('"', "'")
                    and token.end_mark.line > token.start_mark.line):
                return token.start_mark.line + 1
    except yaml.scanner.ScannerError as err:
        context_mark = getattr(err, "context_mark", None)
        if context_mark is not None and "quoted scalar" in (err.context or ""):
            return context_mark.line + 1
    except yaml.YAMLError:
        pass
    return None


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

    ``overrides`` maps the dotted key each ``--set`` replaced to its ``KEY=VALUE`` text. That
    is the key the ``--set`` names, or, where it went *through* a value that was not a mapping
    (``--set seed.foo=1`` over ``seed: 1``), the key whose value it replaced (``seed``): a
    problem at or below it is the ``--set``'s. A problem at a key the ``--set`` only passed
    through (a check of the whole pool after ``--set cluster.pools.x.min_instances=9``) is
    located in the file and names the ``--set`` too, since either may be the mistake.

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
        through = None
        for set_key, item in reversed(self.overrides.items()):  # the last --set wins
            if key == set_key or key.startswith((set_key + ".", set_key + "[")):
                return f"--set {item}"
            if key and set_key.startswith((key + ".", key + "[")):
                through = through or item
        line = yaml_line(self.root, path) if self.root is not None else None
        here = f"{self.source}:{line}" if line else self.source
        return f"{here} (with --set {through})" if through else here

    def report(self, problems: list[tuple[KeyPath, str]]) -> ConfigError:
        """One ConfigError listing every problem, each prefixed by where it is."""
        lines = [f"{self(path)}: {dotted(path) + ': ' if path else ''}{msg}" for path, msg in problems]
        if len(lines) == 1:
            return ConfigError(lines[0])
        head = f"{self.source}: {len(lines)} problems in the configuration"
        return ConfigError("\n  ".join([head, *lines]))
