"""Config problems as sentences: pydantic ValidationErrors → ``(key path, what is wrong)``.

pydantic reports locations the way it walks its validators (with union-member names such as
``synthetic`` or ``function-after`` in them) and messages written for programmers. A user needs
the key as written in the YAML and what was expected, so each error is mapped back through the
schema here. Where a problem is (``FILE:LINE``) is :mod:`chironsim.experiments.yaml_source`'s
job; the scenario schema itself lives in :mod:`chironsim.experiments.config`.
"""

from __future__ import annotations

import difflib
import re
import types
from collections.abc import Sequence
from typing import Annotated, Any, Literal, Union, get_args, get_origin

#: A key path as the user wrote it: mapping keys are strings, list indices are ints.
KeyPath = tuple[str | int, ...]


def dotted(path: Sequence[str | int]) -> str:
    """``("workload", "streams", 0, "path")`` → ``workload.streams[0].path``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def did_you_mean(name: str, known: Sequence[str]) -> str:
    """``"; did you mean 'x'?"`` for the closest known names, or ``""``: typos are the usual mistake."""
    close = difflib.get_close_matches(name, list(known), n=2, cutoff=0.6)
    return f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


def _members(annotation: Any) -> list[Any]:
    """The types a field annotation admits, with Annotated and unions unwrapped."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _members(get_args(annotation)[0])
    if origin is Union or origin is types.UnionType:
        return [m for arg in get_args(annotation) for m in _members(arg)]
    return [annotation]


def _tag(member: Any) -> str | None:
    """The ``kind`` a model answers to in a discriminated union, if it has exactly one."""
    field = getattr(member, "model_fields", {}).get("kind")
    if field is None or get_origin(field.annotation) is not Literal:
        return None
    tags = get_args(field.annotation)
    return tags[0] if len(tags) == 1 else None


def _walk(schema: type, loc: Sequence[str | int]) -> tuple[KeyPath, list[Any]]:
    """Follow a pydantic error location through the schema rooted at ``schema``.

    Returns the key path as the user wrote it — without the union-member names pydantic puts
    in (``synthetic`` and ``poisson`` in ``workload.streams.0.synthetic.arrival.poisson.rate``)
    — and the types allowed at its end (for listing the keys a mapping accepts).
    """
    path: list[str | int] = []
    here: list[Any] = [schema]
    for part in loc:
        if isinstance(part, str) and part.startswith("function-"):
            continue
        tagged = [t for t in here if _tag(t) == part]
        if len(here) > 1 and tagged:
            here = tagged
            continue
        path.append(part)
        below: list[Any] = []
        for t in here:
            fields = getattr(t, "model_fields", None)
            origin, args = get_origin(t), get_args(t)
            if fields is not None:
                below += _members(fields[part].annotation) if part in fields else []
            elif origin is dict and len(args) == 2:
                below += _members(args[1])
            elif origin in (list, tuple) and args and isinstance(part, int):
                below += _members(args[0])
        here = below
    return tuple(path), here


_SHORT = {
    "missing": "required key is missing",
    "float_type": "must be a number", "float_parsing": "must be a number",
    "int_type": "must be a whole number", "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "int_parsing_size": "must be a whole number of a sensible size (this one has too many digits)",
    "bool_type": "must be true or false", "bool_parsing": "must be true or false",
    "string_type": "must be a string",
    "finite_number": "must be a finite number",
    "model_type": "must be a mapping of keys", "model_attributes_type": "must be a mapping of keys",
    "dict_type": "must be a mapping of keys", "list_type": "must be a list",
}


def _shown(value: Any) -> str:
    if value is None or isinstance(value, (dict, list)):
        return ""
    text = repr(value)
    return f" (got {text if len(text) <= 60 else text[:57] + '...'})"


def describe(error: Any, schema: type) -> tuple[KeyPath, str]:
    """One pydantic error as (the user's key path, a sentence saying what was expected).

    ``schema`` is the model that was validated (the root of ``error["loc"]``); it is walked to
    drop union-member names from the path and to list the keys or kinds allowed where one is wrong.
    """
    kind, loc, ctx = error["type"], error["loc"], error.get("ctx") or {}
    if kind == "extra_forbidden":
        parent, allowed_here = _walk(schema, loc[:-1])
        allowed = sorted({k for t in allowed_here for k in getattr(t, "model_fields", {})})
        key = str(loc[-1])
        listing = f" (expected one of: {', '.join(allowed)})" if allowed else ""
        return (*parent, key), f"unknown key{did_you_mean(key, allowed)}{listing}"
    path, here = _walk(schema, loc)
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        tags = [t for t in map(_tag, here) if t] or re.findall(r"'([^']*)'", ctx.get("expected_tags", ""))
        expected = f"(expected one of: {', '.join(tags)})"
        if kind == "union_tag_not_found":
            return path, f"needs a 'kind' {expected}"
        tag = str(ctx.get("tag"))
        return (*path, "kind"), f"unknown kind {tag!r}{did_you_mean(tag, tags)} {expected}"
    if kind == "too_short":
        least = ctx.get("min_length")
        return path, f"needs at least {least} {'entry' if least == 1 else 'entries'} (got {ctx.get('actual_length')})"
    if kind in _SHORT:
        return path, _SHORT[kind] + ("" if kind == "missing" else _shown(error.get("input")))
    msg = error["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
    msg = re.sub(r"^(Input|String|List|Tuple|Dictionary|Value) should", "must", msg)
    return path, msg + _shown(error.get("input"))
