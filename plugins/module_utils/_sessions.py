"""Pairing session events into sessions, and what the window needs to know about them.

A `SessionBook` is fed events in log order (connect, tentative end, disconnect) keyed by
host + program + pid. While reading it keeps only the open sessions and the sessions that
ended inside the window, as (start, end, source); `finish()` sums those up per source and per
moment of the occupancy. Memory follows open sessions and the window's length, never the size
of the log, and the book can be carried to the next run (see `_checkpoint`): a later window
keeps the sessions that still reach into it.
"""

from __future__ import annotations

from typing import Hashable, Sequence

# Open session record: [start, source, last_evidence, tentative_end]
_START, _SOURCE, _LAST, _TENTATIVE = 0, 1, 2, 3

# Source aggregate record: [sessions, longest, open, count_ge(threshold_0), ...]
SESSIONS, LONGEST, OPEN, FIRST_COUNT = 0, 1, 2, 3

# How much later than its end line a session's start line may come and still be taken for
# the start of that session (lines of one second shipped out of order: syslog over UDP,
# several shippers).
REORDER_SLACK = 1.0  # only for keys that do not recur
# How many keys the book remembers for that, and for end lines logged twice.
RECENT_KEYS = 65536


class SessionBook:
    """Sessions of one analysis window ending at `now`.

    A session counts when any part of it lies in [window_start, now]. Its duration is its
    whole length, or its age at `now` when it is still open. `thresholds` are the distinct
    `min_duration` values of the rules; after `finish()` each source in `sources` keeps how
    many of its sessions lasted at least each of them, and `deltas` the changes of the number
    of concurrent sessions.
    """

    def __init__(self, *, window_start: float, now: float, thresholds: Sequence[float]):
        self.window_start = window_start
        self.now = now
        # Sessions still open count with their age up to here: `now`, or the newest log line
        # when the logs end before `now` (the log is the only evidence that they still run).
        self.open_until = now
        self.thresholds = tuple(thresholds)
        self.open_sessions: dict[Hashable, list] = {}
        # Sessions that ended in the window: (start, end, source).
        self.ended: list[tuple[float, float, str | None]] = []
        self.sources: dict[str, list] = {}
        self.deltas: dict[float, int] = {}
        self.counts = {
            "sessions": 0,
            "open_sessions": 0,
            "anonymous_sessions": 0,
            "ended_unknown": 0,
            "start_unknown": 0,
            "repeated_lines": 0,
        }
        self.file_start: float | None = None
        self.host_start: dict[Hashable, float] = {}
        # The earliest time any log read covers: the mean occupancy is taken from there.
        self.data_start: float | None = None
        # Keys whose host is already in host_start: spares splitting the key on every connect.
        self._keys_placed: set[Hashable] = set()
        # Whether a key comes back for a new session (a pid does; an ESA ICID or an Exchange
        # session id does not): a start line at the second its key last ended is then a new
        # session, not the start of that one logged late. Readers with unique ids say False.
        self.keys_recur = True
        # key -> where in `ended` a session lies whose end line came before any start line
        self._orphans: dict[Hashable, int] = {}
        # key -> end of its last session, to know an end line logged twice
        self._closed: dict[Hashable, float] = {}

    def begin_stream(self, first_time: float | None) -> None:
        """Note where the file being read begins (its first line with a readable time)."""
        if first_time is not None:
            self.file_start = first_time
            if self.data_start is None or first_time < self.data_start:
                self.data_start = first_time

    def connect(self, key: Hashable, when: float, source: str | None, *,
                place: bool = True) -> None:  # fmt: skip
        """A session of `key` begins. `place` notes where the key's host begins its log, for a
        later disconnect without connect; keys used once per connection (postscreen's client
        port) say False, so that the book does not remember every key."""
        if place and key not in self._keys_placed:
            self._place_host(key)
        if self._orphans:
            index = self._orphans.pop(key, None)
            if index is not None:
                start, end, known = self.ended[index]
                if when < end or (when <= end + REORDER_SLACK and not self.keys_recur):
                    # The start line of a session whose end line came first.
                    self.ended[index] = (min(when, end), end, known if known else source)
                    self.counts["start_unknown"] -= 1
                    return
        previous = self.open_sessions.get(key)
        if previous is not None:
            # A start line read again (a log shipped twice) always has its session open.
            if self.repeated_start(key, when):
                return
            # The pid logged a new connect before the old session's disconnect: the old
            # session ended somewhere after the last line we saw from it, but not later.
            self.counts["ended_unknown"] += 1
            end = previous[_TENTATIVE] if previous[_TENTATIVE] is not None else previous[_LAST]
            self._end(previous[_START], end, previous[_SOURCE])
        self.open_sessions[key] = [when, source, when, None]

    def repeated_start(self, key: Hashable, when: float) -> bool:
        """Whether a start line of `key` at `when` is the open session's own start line read
        again (a log shipped twice: nothing happened in between); counted in repeated_lines."""
        session = self.open_sessions.get(key)
        if session is None or session[_START] != when or session[_LAST] != when:
            return False
        self.counts["repeated_lines"] += 1
        return True

    def repeated_end(self, key: Hashable, when: float) -> bool:
        """Whether an end line of `key` at `when` is the last end line of `key` read again (a
        log shipped twice), with no session of `key` open since; counted in repeated_lines.
        An end whose start was never read counts once, however often its line comes."""
        if key in self.open_sessions or self._closed.get(key) != when:
            return False
        self.counts["repeated_lines"] += 1
        return True

    def session(self, start: float, end: float, source: str | None) -> None:
        """A whole session, read from its end (postscreen keeps it until it ends)."""
        self._end(min(start, end), end, source)

    def abandon(self, hosts: set[Hashable]) -> int:
        """End the open sessions of `hosts` where they were last seen: their log broke off (a
        damaged file), so no later line can be paired with them. Returns how many ended."""
        broken = [key for key in self.open_sessions if host_of(key) in hosts]
        for key in broken:
            session = self.open_sessions.pop(key)
            self.counts["ended_unknown"] += 1
            end = session[_TENTATIVE] if session[_TENTATIVE] is not None else session[_LAST]
            self._end(session[_START], end, session[_SOURCE])
        # After the gap the host's log starts afresh: a disconnect whose connect was lost
        # began at the earliest where reading resumed, not at the host's first line.
        for host in hosts:
            self.host_start.pop(host, None)
        self._keys_placed = {key for key in self._keys_placed if host_of(key) not in hosts}
        return len(broken)

    def evidence(self, key: Hashable, when: float, *, ending: bool = False) -> None:
        """A line of an open session; `ending` lines (lost connection, timeout, too many
        errors) mark where the session ends if its disconnect never comes."""
        session = self.open_sessions.get(key)
        if session is None:
            return
        session[_LAST] = when
        if ending and session[_TENTATIVE] is None:
            session[_TENTATIVE] = when

    def disconnect(self, key: Hashable, when: float, source: str | None) -> None:
        session = self.open_sessions.pop(key, None)
        if session is None:
            # An end line read again (a log shipped twice) never has a session open.
            if self.repeated_end(key, when):
                return
            # Its connect lies before the first line read of this host's log (the start of
            # the file where the host first appeared): it lasted at least from there. Another
            # gateway's log, read before or after, says nothing about it.
            if self.file_start is None:
                return
            start = self.host_start.setdefault(host_of(key), self.file_start)
            self.counts["start_unknown"] += 1
            if self._end(min(start, when), when, source):
                # Its start line may yet come, out of order.
                if len(self._orphans) >= RECENT_KEYS:
                    self._orphans.clear()
                self._orphans[key] = len(self.ended) - 1
        else:
            self._end(session[_START], when, session[_SOURCE])
        closed = self._closed
        if len(closed) >= RECENT_KEYS:
            closed.clear()
        closed[key] = when

    def extend(self, key: Hashable, *, start: float, end: float, until: float,
               source: str | None, hint: int = -1) -> None:  # fmt: skip
        """The session (start, end, source) of `key`, ended at its last line `end` because its
        key fell silent, went on to a line of `key` at `until` that ends it: it ends there.
        `hint` is where it was put in `ended` (-1 outside the window); carried from an earlier
        run, it lies there or before, where sessions that left the window were dropped."""
        ended = self.ended
        found = -1
        if end >= self.window_start and hint >= 0:
            whole = (start, end, source)
            for position in range(min(hint, len(ended) - 1), -1, -1):
                if ended[position] == whole:
                    found = position
                    break
        if found >= 0:
            ended[found] = (start, until, source)
        else:
            self._end(start, until, source)
        closed = self._closed
        if len(closed) >= RECENT_KEYS:
            closed.clear()
        closed[key] = until

    def finish(self) -> None:
        """Sum up the window: sessions per source, and the occupancy's changes; the sessions
        still open count with their age at `now`. The book itself stays as it was."""
        self.sources = {}
        self.deltas = {}
        self.counts.update(sessions=0, open_sessions=0, anonymous_sessions=0)
        window_start = self.window_start
        count = self._count
        for start, end, source in self.ended:
            if end >= window_start:  # a book carried from an earlier window has older ones
                count(start, end, source, False)
        for start, source, _last, _tentative in self.open_sessions.values():
            self.counts["open_sessions"] += 1
            count(start, max(start, min(self.now, self.open_until)), source, True)

    def _place_host(self, key: Hashable) -> None:
        host = host_of(key)
        if host not in self.host_start and self.file_start is not None:
            self.host_start[host] = self.file_start
        if host in self.host_start:
            self._keys_placed.add(key)

    def _end(self, start: float, end: float, source: str | None) -> bool:
        if end >= self.window_start:
            self.ended.append((start, end, source))
            return True
        return False

    def _count(self, start: float, end: float, source: str | None, still_open: bool) -> None:
        if end < start:
            end = start
        window_start = self.window_start
        deltas = self.deltas
        begin = start if start > window_start else window_start
        deltas[begin] = deltas.get(begin, 0) + 1
        if not still_open:
            deltas[end] = deltas.get(end, 0) - 1
        counts = self.counts
        counts["sessions"] += 1

        if source is None:
            counts["anonymous_sessions"] += 1
            return
        aggregate = self.sources.get(source)
        if aggregate is None:
            aggregate = self.sources[source] = [0, 0.0, 0] + [0] * len(self.thresholds)
        duration = end - start
        aggregate[SESSIONS] += 1
        if duration > aggregate[LONGEST]:
            aggregate[LONGEST] = duration
        if still_open:
            aggregate[OPEN] += 1
        index = FIRST_COUNT
        for threshold in self.thresholds:
            if duration >= threshold:
                aggregate[index] += 1
            index += 1


def host_of(key: Hashable) -> Hashable:
    """The gateway part of a session key: "mx1" of b"mx1 postfix/smtpd[123"."""
    if isinstance(key, bytes):
        return key.partition(b" ")[0] if b" " in key else b""
    if isinstance(key, tuple) and key:
        return key[0]
    return None
