"""Fast parsing of trace timestamps written as date-time strings.

The Azure traces stamp each request as ``2023-11-16 18:15:46.6805900`` (7 fractional digits,
which ``datetime.fromisoformat`` before 3.11 rejects) and the 2024 week-long ones append a UTC
offset (``+00:00``). A week-long trace has tens of millions of rows, so the date part is parsed
once per distinct day and the clock part by slicing; only seconds differences matter, so the
result is seconds since the Unix epoch (UTC when an offset is given, else naive wall clock).
"""

from __future__ import annotations

from datetime import date

_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


class DatetimeParser:
    """Turns ISO-8601 date-time strings into float seconds; caches the day of each date string.

    One parser belongs to one reader (no shared state between readers).
    """

    def __init__(self) -> None:
        self._day_seconds: dict[str, int] = {}

    def seconds(self, text: str) -> float:
        """Seconds since 1970-01-01 of ``text``; raises ValueError if it is not a date-time."""
        text = text.strip()
        if len(text) < 19 or text[10] not in " T" or text[13] != ":" or text[16] != ":":
            raise ValueError(f"not a date-time (YYYY-MM-DD hh:mm:ss[.f][±hh:mm]): {text!r}")
        day_part = text[:10]
        day = self._day_seconds.get(day_part)
        if day is None:
            day = (date.fromisoformat(day_part).toordinal() - _EPOCH_ORDINAL) * 86_400
            self._day_seconds[day_part] = day
        clock = text[11:]
        offset = 0
        if clock.endswith("Z"):
            clock = clock[:-1]
        elif len(clock) > 8 and clock[-6] in "+-" and clock[-3] == ":":
            sign = 1 if clock[-6] == "+" else -1
            offset = sign * (int(clock[-5:-3]) * 3600 + int(clock[-2:]) * 60)
            clock = clock[:-6]
        hours, minutes, secs = int(clock[0:2]), int(clock[3:5]), float(clock[6:])
        if not (0 <= hours < 24 and 0 <= minutes < 60 and 0 <= secs < 61):
            raise ValueError(f"clock out of range: {text!r}")
        return day + hours * 3600 + minutes * 60 + secs - offset
