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


def _clock_and_offset(clock: str) -> tuple[str, int]:
    """The clock part of a time-of-day text without its zone, and the zone's offset in seconds
    east of UTC (``Z`` and no zone: 0; ``±hh:mm``: that offset)."""
    if clock.endswith("Z"):
        return clock[:-1], 0
    if len(clock) > 8 and clock[-6] in "+-" and clock[-3] == ":":
        sign = 1 if clock[-6] == "+" else -1
        return clock[:-6], sign * (int(clock[-5:-3]) * 3600 + int(clock[-2:]) * 60)
    return clock, 0


class DatetimeParser:
    """Turns ISO-8601 date-time strings into float seconds; caches the day of each date string.

    One parser belongs to one reader (no shared state between readers).
    """

    def __init__(self) -> None:
        self._day_seconds: dict[str, int] = {}
        # ``day + hours * 3600 + minutes * 60`` of each ``YYYY-MM-DD hh:mm`` prefix that has
        # parsed in full: a trace's rows share a minute with dozens of others.
        self._minute_seconds: dict[str, int] = {}

    def seconds(self, text: str) -> float:
        """Seconds since 1970-01-01 of ``text``; raises ValueError if it is not a date-time.

        A text whose first 16 characters (date, separator, hours, colon, minutes) are those
        of a text already parsed reuses their seconds, an integer: the day, hours and minutes
        of the full parse are functions of those characters alone (the clock's hours and
        minutes are characters 11-12 and 14-15 whenever at least five of the clock are left
        after its suffix), and they were valid. The seconds, the suffix (``Z`` or a UTC
        offset) and their checks are parsed as in the full parse, and the sum is the same:
        ``day + hours * 3600 + minutes * 60`` is an exact integer either way, to which the
        seconds are added and the offset subtracted in the same order.
        """
        text = text.strip()
        if len(text) < 19 or text[10] not in " T" or text[13] != ":" or text[16] != ":":
            raise ValueError(f"not a date-time (YYYY-MM-DD hh:mm:ss[.f][±hh:mm]): {text!r}")
        base = self._minute_seconds.get(text[:16])
        if base is None:
            return self._parse(text)
        clock, offset = _clock_and_offset(text[11:])
        if len(clock) < 5:
            return self._parse(text)
        secs = float(clock[6:])
        if not 0 <= secs < 61:
            raise ValueError(f"clock out of range: {text!r}")
        return base + secs - offset

    def _parse(self, text: str) -> float:
        """The full parse of a stripped text that passed the shape check."""
        day_part = text[:10]
        day = self._day_seconds.get(day_part)
        if day is None:
            day = (date.fromisoformat(day_part).toordinal() - _EPOCH_ORDINAL) * 86_400
            self._day_seconds[day_part] = day
        clock, offset = _clock_and_offset(text[11:])
        hours, minutes, secs = int(clock[0:2]), int(clock[3:5]), float(clock[6:])
        if not (0 <= hours < 24 and 0 <= minutes < 60 and 0 <= secs < 61):
            raise ValueError(f"clock out of range: {text!r}")
        if len(clock) >= 5:
            self._minute_seconds[text[:16]] = day + hours * 3600 + minutes * 60
        return day + hours * 3600 + minutes * 60 + secs - offset
