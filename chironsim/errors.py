"""User-facing errors.

Everything a user can get wrong (a config key, a trace line, a model name) raises a subclass of
:class:`ChironError`. The CLI turns these into one readable line and exit status 2; anything
else is a bug in chironsim and keeps its traceback.
"""

from __future__ import annotations


class ChironError(Exception):
    """A mistake in the user's input, reported without a traceback."""


class ConfigError(ChironError):
    """A config or experiment file does not validate; the message names the file and key path."""


class TraceFormatError(ChironError):
    """A trace file is malformed; the message names the file and line."""

    def __init__(self, path: object, line: int | None, problem: str) -> None:
        where = f"{path}:{line}" if line is not None else f"{path}"
        super().__init__(f"{where}: {problem}")
        self.path = path
        self.line = line
        self.problem = problem


class UnknownNameError(ChironError, KeyError):
    """A GPU, model, policy or router name that the catalog or registry does not know."""

    def __init__(self, kind: str, name: str, known: list[str]) -> None:
        import difflib

        close = difflib.get_close_matches(name.lower(), [k.lower() for k in known], n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        super().__init__(f"unknown {kind} {name!r}{hint} (known: {', '.join(sorted(known))})")
        self.kind = kind
        self.name = name

    def __str__(self) -> str:  # KeyError would quote the message otherwise
        return str(self.args[0])
