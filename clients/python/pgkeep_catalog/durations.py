"""Durations such as "26h", "30m", "1d 12h" or "90s" (the forms pgkeep's config uses)."""

from __future__ import annotations

import re
from datetime import timedelta

from .errors import UsageError

_UNITS = {
    name: seconds
    for seconds, names in (
        (1, ("s", "sec", "secs", "second", "seconds")),
        (60, ("m", "min", "mins", "minute", "minutes")),
        (3600, ("h", "hr", "hrs", "hour", "hours")),
        (86400, ("d", "day", "days")),
        (604800, ("w", "week", "weeks")),
    )
    for name in names
}

_PART = re.compile(r"\s*(\d+)\s*([a-z]+)\s*")


def parse_duration(text: str) -> timedelta:
    """Parses a positive duration made of `<number><unit>` parts.

    Raises UsageError naming the value when it is malformed, has an unknown unit, or is zero.
    """
    value = text.strip().lower()
    if not value:
        raise UsageError('a duration is empty; write e.g. "26h", "30m", "1d 12h"')
    seconds = 0
    pos = 0
    while pos < len(value):
        part = _PART.match(value, pos)
        if part is None:
            raise UsageError(f'\'{text}\' is not a duration; write e.g. "26h", "30m", "1d 12h"')
        number, unit = part.groups()
        if unit not in _UNITS:
            raise UsageError(f"'{text}' is not a duration (unknown unit '{unit}')")
        seconds += int(number) * _UNITS[unit]
        pos = part.end()
    if seconds == 0:
        raise UsageError(f"'{text}' must be longer than zero")
    if seconds > 100 * 365 * 86400:
        raise UsageError(f"'{text}' is too long")
    return timedelta(seconds=seconds)


def format_age(age: timedelta) -> str:
    """A short human form of a non-negative age: "45s", "12m", "3h 5m", "2d 4h"."""
    total = max(0, int(age.total_seconds()))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h" if hours else f"{days}d"
    if hours:
        return f"{hours}h {minutes}m" if minutes else f"{hours}h"
    if minutes:
        return f"{minutes}m"
    return f"{seconds}s"
