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
    """A trace file is malformed; the message names the file and line.

    ``args`` holds the constructor arguments, so the error survives being re-raised by SimPy
    (``type(e)(*e.args)``) and pickling between worker processes.
    """

    def __init__(self, path: object, line: int | None, problem: str) -> None:
        super().__init__(path, line, problem)
        self.path = path
        self.line = line
        self.problem = problem

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line is not None else f"{self.path}"
        return f"{where}: {self.problem}"


class UnknownNameError(ChironError, KeyError):
    """A GPU, model, policy or router name that the catalog or registry does not know."""

    def __init__(self, kind: str, name: str, known: list[str]) -> None:
        super().__init__(kind, name, list(known))
        self.kind = kind
        self.name = name
        self.known = list(known)

    def __str__(self) -> str:  # KeyError would quote the message otherwise
        import difflib

        close = difflib.get_close_matches(self.name.lower(), [k.lower() for k in self.known], n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        return f"unknown {self.kind} {self.name!r}{hint} (known: {', '.join(sorted(self.known))})"


class RunLimitError(ConfigError):
    """A run outgrew a bound of :mod:`chironsim.limits` that could not be checked before it
    started: a trace-driven run's length is known only once its trace has been read, so its
    sample and tick counts are checked as the simulation goes. The message names the key to
    change; the caller adds the file."""
