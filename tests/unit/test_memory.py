"""Streaming: what the engine keeps follows open sessions, sources and the window, not the
number of lines read."""

from __future__ import annotations

import pytest

from ansible_collections.campusnet.smtpguard.plugins.module_utils._postfix import (
    Stats,
    read_postfix,
)
from ansible_collections.campusnet.smtpguard.plugins.module_utils._sessions import SessionBook
from ansible_collections.campusnet.smtpguard.plugins.module_utils._timestamps import (
    CACHE_LIMIT,
    TimestampParser,
)
from support.logs import NOW, UTC, flood_lines

RATE = 20  # lines a second
WINDOW = 600.0


class WatchedBook(SessionBook):
    """A SessionBook that remembers the most sessions it ever held open at once."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.most_open = 0

    def connect(self, key, when, source):
        super().connect(key, when, source)
        self.most_open = max(self.most_open, len(self.open_sessions))


def _stream(count, *, concurrency, sources=200, rate=RATE):
    book = WatchedBook(window_start=NOW - WINDOW, now=NOW, thresholds=(0.0, 20.0, 200.0))
    parser = TimestampParser(zone=UTC, now=NOW)
    stats = Stats()
    addresses: dict[bytes, str | None] = {}
    lines = flood_lines(
        count=count, start=NOW - count // rate, concurrency=concurrency, sources=sources, rate=rate
    )

    read_postfix(lines, book=book, stamp_of=parser, stats=stats, ranks={}, addresses=addresses)
    return book, parser, stats, addresses


@pytest.mark.parametrize("concurrency", [1, 8, 40])
def test_open_sessions_stay_bounded_by_concurrency_over_200k_lines(concurrency):
    book, parser, stats, addresses = _stream(200_000, concurrency=concurrency)

    assert stats.lines == 200_000
    assert stats.parsed > 60_000
    assert book.most_open == concurrency
    assert len(book.open_sessions) <= concurrency
    assert len(book.sources) <= 200
    assert len(addresses) <= 200
    assert len(parser._cache) <= CACHE_LIMIT


def test_deltas_keep_at_most_one_key_per_second_of_the_window():
    book, _, _, _ = _stream(200_000, concurrency=8)
    book.finish()

    seconds_in_window = int(WINDOW) + 1
    assert 0 < len(book.deltas) <= seconds_in_window
    assert min(book.deltas) >= NOW - WINDOW
    assert max(book.deltas) <= NOW
    # Sessions that ended long before the window left nothing behind.
    assert book.counts["sessions"] <= WINDOW * RATE / 6 + 16
