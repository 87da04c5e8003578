"""Timestamps of log lines, with year inference where the line has no year.

Shapes: syslog (`Mar  4 14:21:04`), Postfix `maillog_file` (`Mar 04 14:21:04`), RFC 3339
(`2026-03-04T14:21:04.5+01:00`), the same with a space for the `T` (Exim:
`2026-03-04 14:21:04`), and ctime (Cisco ESA files: `Wed Mar  4 14:21:04 2026`).

Each distinct timestamp string is parsed once; callers keep a `TimestampParser` per file
because the year of a year-less timestamp depends on that file's reference time.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, tzinfo
from typing import Optional

try:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError
except ImportError:  # pragma: no cover - Python < 3.9 is not supported by ansible-core 2.19
    ZoneInfo = None  # type: ignore[assignment,misc]
    ZoneInfoNotFoundError = KeyError  # type: ignore[assignment,misc]

MONTHS = {
    name.encode(): number
    for number, name in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"),
        start=1,
    )
}

# A clock that runs a little ahead of the controller must not push a line into the past year.
FUTURE_SLACK = 86400.0

# Lines come in time order, so only recent stamps repeat: a small cache catches nearly every
# repeat, and its size stays the same however long the log.
CACHE_LIMIT = 4096

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


class TimestampError(ValueError):
    """A timestamp option or value that cannot be understood."""


def parse_duration(value: int | float | str, *, name: str = "duration") -> float:
    """Seconds from `90`, `"90"`, `"30m"`, `"2h"` or `"1d"`."""
    if isinstance(value, bool):
        raise TimestampError(f"{name}: {value!r} is not a duration")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise TimestampError(
                f"{name}: {value!r} is not a duration; use seconds or a number with s, m, h or d"
            )
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if not math.isfinite(seconds):
        raise TimestampError(f"{name}: {value!r} is not a finite duration")
    if seconds < 0:
        raise TimestampError(f"{name}: {value!r} is negative")
    return seconds


def load_zone(name: str | None) -> tzinfo | None:
    """The IANA zone `name`; None means the controller's local time."""
    if not name:
        return None
    if name.upper() in ("UTC", "Z"):
        return UTC
    if ZoneInfo is None:  # pragma: no cover
        raise TimestampError("timezone support needs Python's zoneinfo module")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise TimestampError(f"timezone {name!r} is not an IANA time zone ({exc})") from None


def parse_iso(value: str, *, zone: tzinfo | None) -> float:
    """Epoch seconds of an ISO 8601 time; a time without offset is read in `zone`."""
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(text)
        if moment.tzinfo is None and zone is not None:
            moment = moment.replace(tzinfo=zone)
        return moment.timestamp()
    except (ValueError, OverflowError):
        raise TimestampError(
            f"{value!r} is not an ISO 8601 time such as 2026-12-03T16:30:00+09:00"
        ) from None


def format_epoch(epoch: float, *, zone: tzinfo | None) -> str:
    """ISO 8601 text of an epoch, with offset, in `zone` (local time when None)."""
    moment = datetime.fromtimestamp(epoch, tz=zone or UTC)
    if zone is None:
        moment = moment.astimezone()
    return moment.isoformat(timespec="seconds" if epoch == int(epoch) else "milliseconds")


class TimestampParser:
    """Turns the timestamp field of a line into epoch seconds, caching each distinct string.

    Year-less timestamps take a year by one of three policies:
    - `year` given: that year;
    - `now` given: the year that puts the line nearest to `now` (logs around the check time,
      before or after it, across New Year either way);
    - otherwise the file's modification time `reference`: the latest year that does not put
      the line after it (a December line in a file written in January is last year's).
    """

    def __init__(
        self,
        *,
        zone: tzinfo | None,
        year: int | None = None,
        now: float | None = None,
        reference: float | None = None,
    ):
        self.zone = zone
        self.year = year
        self.now = now
        self.reference = reference
        self._cache: dict[bytes, Optional[float]] = {}
        anchor = now if now is not None else reference
        self._anchor_year = (
            datetime.fromtimestamp(anchor, tz=zone or UTC).year
            if anchor is not None
            else datetime.now(tz=zone or UTC).year
        )

    def __call__(self, stamp: bytes) -> float | None:
        try:
            return self._cache[stamp]
        except KeyError:
            pass
        epoch = self._parse(stamp)
        if len(self._cache) >= CACHE_LIMIT:
            self._cache.clear()
        self._cache[stamp] = epoch
        return epoch

    def _parse(self, stamp: bytes) -> float | None:
        if stamp[:1].isdigit():
            return self._parse_rfc3339(stamp)
        if len(stamp) == 24 and stamp[3:4] == b" ":
            return self._parse_ctime(stamp)
        return self._parse_syslog(stamp)

    def _parse_rfc3339(self, stamp: bytes) -> float | None:
        # A date and a time ("2026-12-03T16:15:00..."); a bare date such as the first field of
        # "2026-12-03 16:15:00 host ..." would put every line at midnight.
        # A space for the "T" is Exim's shape, and only ever taken with the time after it.
        if len(stamp) < 19 or stamp[10:11] not in (b"T", b"t", b" ") or stamp[4:5] != b"-":
            return None
        try:
            return parse_iso(stamp.decode("ascii"), zone=self.zone)
        except (TimestampError, UnicodeDecodeError):
            return None

    def _parse_ctime(self, stamp: bytes) -> float | None:
        # "Wed Jun 16 21:42:34 2004" or "Wed Jun  6 21:42:34 2004": the weekday is not checked
        # (the date says it), the year is the line's own.
        try:
            year = int(stamp[20:24])
        except ValueError:
            return None
        if not 1971 <= year <= 9998:
            return None
        return self._parse_syslog(stamp[4:19], year=year)

    def _parse_syslog(self, stamp: bytes, *, year: int | None = None) -> float | None:
        # "Mar  4 14:21:04" (syslog) or "Mar 04 14:21:04" (Postfix maillog_file)
        if len(stamp) != 15 or stamp[3:4] != b" " or stamp[6:7] != b" ":
            return None
        month = MONTHS.get(stamp[:3])
        if month is None or stamp[9:10] != b":" or stamp[12:13] != b":":
            return None
        try:
            day = int(stamp[4:6])
            hour, minute, second = int(stamp[7:9]), int(stamp[10:12]), int(stamp[13:15])
        except ValueError:
            return None
        if not (1 <= day <= 31 and hour < 24 and minute < 60 and second < 61):
            return None
        if year is not None:
            return self._moment(year, month, day, hour, minute, min(second, 59))
        return self._place_in_year(month, day, hour, minute, min(second, 59))

    def _moment(self, year: int, *fields: int) -> float | None:
        try:
            moment = datetime(year, *fields)
        except ValueError:
            return None
        if self.zone is None:
            return moment.timestamp()
        return moment.replace(tzinfo=self.zone).timestamp()

    def _place_in_year(self, month: int, day: int, *clock: int) -> float | None:
        if self.year is not None:
            return self._moment(self.year, month, day, *clock)

        years = range(self._anchor_year - 8, self._anchor_year + 2)
        options = [
            (year, epoch)
            for year in years
            if (epoch := self._moment(year, month, day, *clock)) is not None
        ]
        if not options:
            return None  # a date that exists in no year, such as "Feb 30"
        if self.now is not None:
            return min(options, key=lambda option: (abs(option[1] - self.now), -option[0]))[1]

        limit = (self.reference if self.reference is not None else _wallclock()) + FUTURE_SLACK
        past = [epoch for _, epoch in options if epoch <= limit]
        return max(past) if past else min(epoch for _, epoch in options)


def _wallclock() -> float:
    return datetime.now(tz=UTC).timestamp()


__all__ = [
    "CACHE_LIMIT",
    "FUTURE_SLACK",
    "TimestampError",
    "TimestampParser",
    "format_epoch",
    "load_zone",
    "parse_duration",
    "parse_iso",
]
