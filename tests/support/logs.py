"""Postfix logs for tests, written line by line the way Postfix writes them.

    log = PostfixLog(style="syslog")
    log.session("192.0.2.7", start=NOW - 120, duration=40)      # connect ... disconnect
    log.session("192.0.2.8", start=NOW - 30, duration=None)     # still open
    log.write(tmp_path / "mail.log")
    result = run_analysis(tmp_path / "mail.log", now=NOW)

Times are epoch seconds; NOW is 2026-12-03T10:00:00Z. Lines come out sorted by time (lines
at the same time keep the order they were added in). Only documentation addresses are used.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Iterator
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Any

from ansible_collections.campusnet.smtpguard.plugins.module_utils._analyze import (
    Settings,
    analyze,
)
from ansible_collections.campusnet.smtpguard.plugins.module_utils._postfix import (
    Stats,
    read_postfix,
)
from ansible_collections.campusnet.smtpguard.plugins.module_utils._sessions import (
    LONGEST,
    OPEN,
    SESSIONS,
    SessionBook,
)
from ansible_collections.campusnet.smtpguard.plugins.module_utils._timestamps import (
    TimestampParser,
)

UTC = UTC
NOW = datetime(2026, 12, 3, 10, 0, 0, tzinfo=UTC).timestamp()
NOW_ISO = "2026-12-03T10:00:00+00:00"

# Every rule matches every source: tests of pairing read candidates as a list of sources.
ANY_SESSION = [{"name": "any", "min_duration": 0, "min_sessions": 1, "min_risk": 0}]

STYLES = ("syslog", "maillog", "rfc3339")


def stamp(when: float, style: str = "syslog", *, zone: tzinfo = UTC) -> str:
    """The timestamp field of a line at `when` in one of the three prefix styles.

    syslog:  "Dec  3 10:00:00" (space-padded day)
    maillog: "Dec 03 10:00:00" (Postfix maillog_file, zero-padded day)
    rfc3339: "2026-12-03T10:00:00.250000+00:00" (fractions only when `when` has them)
    """
    moment = datetime.fromtimestamp(when, tz=zone)
    if style == "syslog":
        return f"{moment:%b} {moment.day:2d} {moment:%H:%M:%S}"
    if style == "maillog":
        return f"{moment:%b %d %H:%M:%S}"
    if style == "rfc3339":
        spec = "microseconds" if moment.microsecond else "seconds"
        return moment.isoformat(timespec=spec)
    raise ValueError(f"unknown timestamp style {style!r}")


def client(source: str, *, name: str = "unknown", port: int | None = None) -> str:
    """The peer as Postfix writes it: name[address] or name[address]:port."""
    text = f"{name}[{source}]"
    return text if port is None else f"{text}:{port}"


class PostfixLog:
    """Lines of a Postfix log, built from sessions and raw messages, sorted by time."""

    def __init__(
        self,
        *,
        style: str = "syslog",
        host: str = "mx1",
        program: str = "postfix/smtpd",
        zone: tzinfo = UTC,
        first_pid: int = 1000,
        newline: str = "\n",
    ):
        self.style = style
        self.host = host
        self.program = program
        self.zone = zone
        self.newline = newline
        self._pid = first_pid
        self._lines: list[tuple[float, int, str]] = []

    def next_pid(self) -> int:
        self._pid += 1
        return self._pid

    def line(
        self,
        when: float,
        message: str,
        *,
        pid: int,
        host: str | None = None,
        program: str | None = None,
        style: str | None = None,
    ) -> PostfixLog:
        """Add one line `<stamp> <host> <program>[<pid>]: <message>`."""
        prefix = stamp(when, style or self.style, zone=self.zone)
        text = f"{prefix} {host or self.host} {program or self.program}[{pid}]: {message}"
        self._lines.append((when, len(self._lines), text))
        return self

    def raw(self, when: float, text: str) -> PostfixLog:
        """Add a line exactly as given, placed at `when` in the sorted output."""
        self._lines.append((when, len(self._lines), text))
        return self

    def connect(
        self, when: float, source: str, *, pid: int, port: int | None = None, **where: Any
    ) -> PostfixLog:
        return self.line(when, f"connect from {client(source, port=port)}", pid=pid, **where)

    def disconnect(
        self, when: float, source: str, *, pid: int, port: int | None = None, **where: Any
    ) -> PostfixLog:
        message = f"disconnect from {client(source, port=port)} ehlo=1 mail=1 rcpt=0/1 commands=2/3"
        return self.line(when, message, pid=pid, **where)

    def session(
        self,
        source: str,
        *,
        start: float,
        duration: float | None,
        pid: int | None = None,
        ending: str | None = None,
        **where: Any,
    ) -> int:
        """A whole session: connect, an optional ending line (`lost connection after DATA
        from ...`) at its end, and its disconnect; `duration=None` leaves it open.

        Returns the pid it used.
        """
        pid = self.next_pid() if pid is None else pid
        self.connect(start, source, pid=pid, **where)
        if duration is not None:
            end = start + duration
            if ending:
                self.line(end, f"{ending} from {client(source)}", pid=pid, **where)
            self.disconnect(end, source, pid=pid, **where)
        return pid

    def sessions(
        self,
        source: str,
        count: int,
        *,
        start: float,
        duration: float | None,
        spacing: float = 1.0,
        **where: Any,
    ) -> PostfixLog:
        """`count` sessions of `source`, one every `spacing` seconds from `start`."""
        for index in range(count):
            self.session(source, start=start + index * spacing, duration=duration, **where)
        return self

    def text(self) -> str:
        return "".join(line + self.newline for _, _, line in sorted(self._lines))

    def data(self) -> bytes:
        return self.text().encode()

    def write(
        self, path: str | os.PathLike, *, compress: bool = False, mtime: float | None = None
    ) -> Path:
        """Write the log (gzip-compressed when `compress`), with `mtime` when given."""
        path = Path(path)
        data = self.data()
        path.write_bytes(gzip.compress(data) if compress else data)
        if mtime is not None:
            os.utime(path, (mtime, mtime))
        return path


def write_bytes(path: str | os.PathLike, data: bytes, *, mtime: float | None = None) -> Path:
    path = Path(path)
    path.write_bytes(data)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def flood_lines(
    *,
    count: int,
    start: float,
    concurrency: int,
    session_lines: int = 4,
    sources: int = 200,
    rate: int = 20,
) -> Iterator[bytes]:
    """A long log generated lazily: `count` lines, `rate` a second, in which `concurrency`
    sessions at a time (each of `session_lines` lines between connect and disconnect) open
    and close, from `sources` different addresses."""
    steps = session_lines + 2
    produced = 0
    round_number = 0
    second = None
    prefix = ""
    while True:
        for step in range(steps):
            for slot in range(concurrency):
                if produced == count:
                    return
                when = start + produced // rate
                if when != second:
                    second, prefix = when, stamp(when) + " mx1 postfix/smtpd["
                peer = client(
                    f"198.51.100.{(round_number * concurrency + slot) % sources % 250 + 1}"
                )
                if step == 0:
                    message = f"connect from {peer}"
                elif step == steps - 1:
                    message = f"disconnect from {peer} ehlo=1 quit=1 commands=2"
                else:
                    message = f"NOQUEUE: reject: RCPT from {peer}: 554 5.7.1 denied"
                yield f"{prefix}{2000 + slot}]: {message}\n".encode()
                produced += 1
        round_number += 1


def read_log(
    data: bytes | PostfixLog,
    *,
    now: float = NOW,
    window: float = 86400.0,
    book: SessionBook | None = None,
) -> tuple[SessionBook, Stats]:
    """Read one log through read_postfix into a SessionBook (window ending at `now`) and
    finish it: the engine below analyze(), without files."""
    if isinstance(data, PostfixLog):
        data = data.data()
    book = book or SessionBook(window_start=now - window, now=now, thresholds=(0.0,))
    stats = Stats()
    read_postfix(
        iter(data.splitlines(keepends=True)),
        book=book,
        stamp_of=TimestampParser(zone=UTC, now=now),
        stats=stats,
        ranks={},
        addresses={},
    )
    book.finish()
    return book, stats


def sessions_of(book: SessionBook) -> dict[str, tuple[int, float, int]]:
    """(sessions, longest, open) per source of a finished book."""
    return {
        source: (aggregate[SESSIONS], aggregate[LONGEST], aggregate[OPEN])
        for source, aggregate in book.sources.items()
    }


def run_analysis(
    *paths: str | os.PathLike, warnings: list[str] | None = None, **options: Any
) -> dict:
    """analyze() on `paths` with test defaults: capacity 100, now=NOW, UTC, force, and
    rules that match every source; any option can be overridden."""
    settings: dict[str, Any] = {
        "capacity": 100,
        "now": NOW_ISO,
        "timezone": "UTC",
        "force": True,
        "rules": ANY_SESSION,
        "risk_source": "none",
    }
    settings.update(options)
    if settings["now"] is None:
        del settings["now"]
    collected = warnings if warnings is not None else []
    return analyze(Settings(paths=[str(path) for path in paths], **settings), warn=collected.append)


# The keys of a candidate that DESIGN.md promises; results may carry more.
CANDIDATE_KEYS = (
    "ip",
    "rule",
    "rules",
    "sessions",
    "qualifying_sessions",
    "longest_session",
    "open_sessions",
    "risk",
)


def contract(candidate: dict) -> dict:
    """A candidate reduced to the keys of the contract."""
    return {key: candidate[key] for key in CANDIDATE_KEYS}


def by_source(result: dict) -> dict[str, dict]:
    """Candidates keyed by address."""
    return {candidate["ip"]: candidate for candidate in result["candidates"]}


def iso(when: float) -> str:
    return datetime.fromtimestamp(when, tz=UTC).isoformat()


def at(text: str) -> float:
    """Epoch seconds of an ISO 8601 time."""
    return datetime.fromisoformat(text).timestamp()


__all__ = [
    "ANY_SESSION",
    "CANDIDATE_KEYS",
    "NOW",
    "NOW_ISO",
    "STYLES",
    "PostfixLog",
    "at",
    "by_source",
    "client",
    "contract",
    "flood_lines",
    "iso",
    "read_log",
    "run_analysis",
    "sessions_of",
    "stamp",
    "write_bytes",
]
