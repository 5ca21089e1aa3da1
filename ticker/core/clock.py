"""Times of the festival day, as integer milliseconds since 00:00:00."""

import re

DAY_MS = 86_400_000
_TIME = re.compile(r"^(\d{1,2}):(\d{2})(?::(\d{2})(?:\.(\d{1,3}))?)?$")


def parse_time_of_day(text: str) -> int:
    """Parse `HH:MM`, `HH:MM:SS` or `HH:MM:SS.mmm` (up to 24:00:00) into ms since midnight."""
    match = _TIME.match(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not a time of day; use HH:MM or HH:MM:SS, e.g. 01:47:00")
    hours, minutes = int(match[1]), int(match[2])
    seconds = int(match[3] or 0)
    millis = int((match[4] or "0").ljust(3, "0"))
    if minutes > 59 or seconds > 59:
        raise ValueError(f"{text!r} has minutes or seconds above 59")
    total = ((hours * 60 + minutes) * 60 + seconds) * 1000 + millis
    if total > DAY_MS:
        raise ValueError(f"{text!r} is past the end of the day (24:00:00)")
    return total


def format_time_of_day(ms: int, millis: bool = True) -> str:
    """Format ms since midnight as `HH:MM:SS.mmm` (or `HH:MM:SS`)."""
    seconds, rest = divmod(ms, 1000)
    minutes, sec = divmod(seconds, 60)
    hours, minute = divmod(minutes, 60)
    text = f"{hours:02d}:{minute:02d}:{sec:02d}"
    return f"{text}.{rest:03d}" if millis else text
