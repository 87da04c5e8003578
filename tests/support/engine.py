"""The Postfix reader run into an `Engine` without files, and what tests read back from it.

    log = PostfixLog(program="postfix/postscreen")
    log.line(NOW - 30, "CONNECT from [192.0.2.5]:4000 to [198.51.100.25]:25", pid=5)
    engine = read_engine(log)
    durations(engine.book)           # {"192.0.2.5": [30.0]} once the session ends ...
    engine.book.counts["open_sessions"]   # ... or 1 while it is still open at `now`

Both books (client sessions and the gateway's sessions to internal servers) are finished.
"""

from __future__ import annotations

from collections.abc import Iterable

from ansible_collections.campusnet.smtpguard.plugins.module_utils._engine import Engine
from ansible_collections.campusnet.smtpguard.plugins.module_utils._postfix import read
from ansible_collections.campusnet.smtpguard.plugins.module_utils._sessions import SessionBook
from ansible_collections.campusnet.smtpguard.plugins.module_utils._timestamps import (
    TimestampParser,
)
from support.logs import NOW, UTC, PostfixLog


def read_engine(
    data: PostfixLog | bytes | Iterable[bytes],
    *,
    now: float = NOW,
    window: float = 86400.0,
    servers: bool = False,
    thresholds: tuple[float, ...] = (0.0,),
) -> Engine:
    """Read `data` (a log, its bytes, or its lines) through the Postfix reader into a new
    engine whose window ends at `now`; `servers` turns on the reading of deliveries."""
    if isinstance(data, PostfixLog):
        data = data.data()
    lines = data.splitlines(keepends=True) if isinstance(data, bytes) else list(data)
    book = SessionBook(window_start=now - window, now=now, thresholds=thresholds)
    engine = Engine(book)
    engine.track_servers = servers
    read(iter(lines), engine=engine, stamp_of=TimestampParser(zone=UTC, now=now))
    book.finish()
    engine.servers.finish()
    return engine


def durations(book: SessionBook) -> dict[str | None, list[float]]:
    """The lengths of the sessions that ended, per source, shortest first."""
    found: dict[str | None, list[float]] = {}
    for start, end, source in book.ended:
        found.setdefault(source, []).append(end - start)
    return {source: sorted(lengths) for source, lengths in found.items()}


def spans(book: SessionBook) -> list[tuple[float, float, str | None]]:
    """The sessions that ended, as (start, end, source) relative to NOW, in time order."""
    return sorted((start - NOW, end - NOW, source) for start, end, source in book.ended)


__all__ = ["durations", "read_engine", "spans"]
