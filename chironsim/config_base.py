"""Base classes and bounded number types shared by every config model.

A scenario's numbers are validated where they are read: :class:`ConfigModel` refuses ``inf``
and ``nan`` everywhere (no scenario number means "infinitely many"), and :func:`limited`
adds the upper bounds of :mod:`chironsim.limits` with messages that name the unit, so a
``rate: .inf`` says ``must be at most 100,000 arrivals/s (got inf)`` at its key.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from chironsim.limits import MAX_INSTANCES, MAX_NAME_LENGTH, MAX_TIME_S, MIN_POLICY_INTERVAL_S


class StrictModel(BaseModel):
    """Pydantic model that forbids unknown keys and is frozen after validation."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ConfigModel(StrictModel):
    """A scenario config model: strict, frozen, and every float finite.

    Infinity or NaN in a scenario is always a mistake (a YAML ``.inf`` or a string ``'nan'``):
    pydantic accepts both for ``float`` unless told otherwise, and either would reach the
    simulator as an endless loop or a silent NaN.
    """

    model_config = ConfigDict(allow_inf_nan=False)


def number_text(value: float) -> str:
    """``100000`` → ``100,000``; ``0.001`` → ``0.001``: bounds as a person reads them."""
    if isinstance(value, int) or (float(value).is_integer() and abs(value) < 1e15):
        return f"{int(value):,}"
    return f"{value:g}"


def limited(base: type, le: float, unit: str, *, gt: float | None = None,
            ge: float | None = None, floor: float | None = None) -> Any:
    """``base`` (float or int) with a lower bound (pydantic's ``gt``/``ge``, whose messages
    callers already know) and an upper bound ``le`` whose message names ``unit``.

    ``floor``: positive values must be at least this (zero stays allowed where ``ge=0``), for
    numbers whose tiny positive values mean a hang (a rate of 1e-300 arrivals/s). Floats keep
    ``inf``/``nan`` until the bound check so that ``.inf`` reports the allowed range, not just
    "finite"; whole numbers given as huge floats (``1e30``) get the same message instead of
    pydantic's "exceeded maximum size".
    """
    least = ge if ge is not None else gt
    unit = f" {unit}" if unit else ""

    def check(value: Any) -> Any:
        if not value <= le:  # also catches nan
            raise ValueError(f"must be at most {number_text(le)}{unit}")
        if floor is not None and 0 < value < floor:
            zero = "0 or " if ge == 0 else ""
            raise ValueError(f"must be {zero}at least {number_text(floor)}{unit}")
        return value

    def huge_float(value: Any) -> Any:
        if isinstance(value, float) and math.isfinite(value) and abs(value) >= 2**53:
            if value > le:
                raise ValueError(f"must be at most {number_text(le)}{unit}")
            raise ValueError(f"must be at least {number_text(least or 0)}{unit}")
        return value

    if base is int:
        return Annotated[int, BeforeValidator(huge_float), Field(gt=gt, ge=ge), AfterValidator(check)]
    return Annotated[float, Field(gt=gt, ge=ge, allow_inf_nan=True), AfterValidator(check)]


_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+=,@-]*")


def check_result_name(name: str) -> str:
    """A results-folder name must be one safe path component: ``results/<name>`` stays inside
    ``results/`` (no ``/``, ``..`` or empty name), is not hidden, and can be typed in a shell."""
    if not name:
        raise ValueError("must not be empty: it names the results folder results/<name>")
    if name in (".", ".."):
        raise ValueError(f"must not be {name!r}: it names the results folder results/<name>")
    if "/" in name or "\\" in name:
        raise ValueError("must not contain a path separator (/ or \\): it names one results "
                         "folder, results/<name>; use --out DIR to write elsewhere")
    if name.startswith("."):
        raise ValueError("must not start with '.': that would be a hidden folder")
    if len(name) > MAX_NAME_LENGTH:
        raise ValueError(f"must be at most {MAX_NAME_LENGTH} characters (got {len(name)})")
    if not _NAME.fullmatch(name):
        raise ValueError("may use only letters, digits and _ . + = , @ - (and not start with "
                         "one of . + = , @ -)")
    return name


# --- bounded types that more than one schema uses ---------------------------------------------

#: a time, delay or window: zero up to a year
Seconds = limited(float, MAX_TIME_S, "s", ge=0)
#: a length of time that must be positive
PositiveSeconds = limited(float, MAX_TIME_S, "s", gt=0)
#: a controller's tick: positive, and not so small that ticking alone is the whole run
PolicyInterval = limited(float, MAX_TIME_S, "s", gt=0, floor=MIN_POLICY_INTERVAL_S)
#: instances a pool holds or a policy may ask for
InstanceCount = limited(int, MAX_INSTANCES, "instances", ge=0)
PositiveInstanceCount = limited(int, MAX_INSTANCES, "instances", ge=1)
