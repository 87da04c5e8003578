"""What the reader of every log format feeds, and the registry of formats.

A format is a module with four names:
- `NAME`: the `format` option's value (`postfix`, `cisco_esa`, ...);
- `looks_like(head)`: whether the first lines of a file (bytes, at most 200) are its log;
- `line_time(line, stamp_of)`: the time of one line, or None; used to find where the logs
  end (the default `now`) and where a file begins;
- `read(handle, *, engine, stamp_of, first)`: feed every line of `handle` (bytes, in file
  order) to `engine` and return the file's first time (`first` is given when reading goes
  on where an earlier run stopped).

Readers key sessions by bytes `b"<host> <id>"`, with `Engine.origin` as the host of a line
that names none: `host_of` splits the gateway off there, and the checkpoint stores keys as
text. Only addresses that went through `Engine.source` (that is, `ipaddress`) become sources
or servers.
"""

from __future__ import annotations

from typing import Callable

from ansible_collections.campusnet.smtpguard.plugins.module_utils._addresses import (
    normalise_address,
)
from ansible_collections.campusnet.smtpguard.plugins.module_utils._sessions import SessionBook

# How many distinct address texts the normalisation cache keeps.
ADDRESS_CACHE = 1_000_000

# What `Engine.note` counts per source; the attack-kind labels read them.
NOTES = (
    "pregreet",  # spoke before its turn (postscreen PREGREET, Sendmail pre-greeting traffic)
    "command_time_limit",  # postscreen COMMAND TIME LIMIT, Exim/Sendmail command timeouts
    "rejected",  # a session refused at connect (ESA REJECT/TCPREFUSE, Exim drops)
    "connection_limit",  # the gateway said the source hit a connection limit
    "denylisted",  # postscreen DENYLISTED / BLACKLISTED
    "allowlisted",  # postscreen ALLOWLISTED / WHITELISTED
    "server_421",  # an internal server answered 421 to a message of this source
    "server_tempfail",  # ... or another 4xx
)


class Stats:
    """Line counters of one analysis; `as_dict` is what flood_analyze reports.

    `bad_fields` counts values of a field the reader knows that are out of range or
    unreadable (a JSON risk of 250, an Exim `D=` no session can last): the value is left out
    and the rest of its line is read.
    """

    __slots__ = ("lines", "parsed", "ignored", "skipped", "after_now", "bad_addresses",
                 "bad_fields")  # fmt: skip

    def __init__(self) -> None:
        self.lines = self.parsed = self.ignored = self.skipped = 0
        self.after_now = self.bad_addresses = self.bad_fields = 0

    def as_dict(self) -> dict:
        return {name: getattr(self, name) for name in self.__slots__}


class Engine:
    """Everything one analysis collects from the logs, whatever their format.

    - `book`: the client sessions at the gateway (source = client address);
    - `servers`: the gateway's sessions to internal mail servers (source = server address);
    - `ranks`: the highest postscreen DNSBL rank per source;
    - `risks`: the highest risk in percent that the log itself gives a source (ESA SBRS,
      a JSON field);
    - `replies`: per source, the temporary failures the gateway answered it with
      ({"421": n, "4xx": n}, where "4xx" counts every 4xx including 421);
    - `server_replies`: the same per internal server, for what the servers answered the gateway;
    - `notes`: per source, counts of the events in NOTES;
    - `format_state`: what a format carries from one file or run to the next (an Exchange
      log's `#Fields:` header, say); JSON-serialisable;
    - `skip_reasons`: why lines of the file being read were skipped, when a reader knows a
      reason the operator can act on, with how many lines; the analysis reports them per
      file and empties it.
    """

    def __init__(self, book: SessionBook, *, servers: SessionBook | None = None,
                 options: dict | None = None) -> None:  # fmt: skip
        self.book = book
        self.servers = servers if servers is not None else SessionBook(
            window_start=book.window_start, now=book.now, thresholds=()
        )  # fmt: skip
        self.options = options or {}
        # Whether deliveries to internal servers are read (servers are to be reported).
        self.track_servers = False
        self.stats = Stats()
        self.ranks: dict[str, int] = {}
        self.risks: dict[str, float] = {}
        self.addresses: dict[bytes, str | None] = {}
        self.replies: dict[str, dict[str, int]] = {}
        self.server_replies: dict[str, dict[str, int]] = {}
        self.notes: dict[str, dict[str, int]] = {}
        self.format_state: dict = {}
        self.skip_reasons: dict[str, int] = {}
        # The host part of the session keys of lines that name no host (an appliance's own
        # file, Postfix's maillog_file): the rotated family being read, so that two such logs
        # never share a session; b"" when the reader is fed without files.
        self.origin = b""

    def source(self, raw: bytes) -> str | None:
        """The canonical text of the address `raw` as a log wrote it, or None for `unknown`
        and anything that is not an address (counted in stats.bad_addresses)."""
        try:
            return self.addresses[raw]
        except KeyError:
            pass
        text = raw[5:] if raw[:5] in (b"IPv6:", b"ipv6:") else raw
        source = None if text in (b"unknown", b"") else normalise_address(text)
        if source is None and text not in (b"unknown", b""):
            self.stats.bad_addresses += 1
        if len(self.addresses) < ADDRESS_CACHE:
            self.addresses[raw] = source
        return source

    def risk(self, source: str | None, percent: float) -> None:
        """A risk in percent (0 to 100) that the log gives `source`; the highest one counts."""
        if source is None or not 0.0 <= percent <= 100.0:
            return
        if percent > self.risks.get(source, -1.0):
            self.risks[source] = percent

    def rank(self, source: str | None, rank: int) -> None:
        """A postscreen DNSBL rank of `source`; the highest one counts."""
        if source is not None and rank > self.ranks.get(source, -(2**31)):
            self.ranks[source] = rank

    def reply(self, source: str | None, code: int) -> None:
        """The gateway answered `source` with SMTP `code`; temporary failures are counted."""
        if source is not None and 400 <= code < 500:
            _count_reply(self.replies, source, code)

    def server_reply(self, server: str | None, code: int) -> None:
        """An internal server answered the gateway with `code`; temporary failures count."""
        if server is not None and 400 <= code < 500:
            _count_reply(self.server_replies, server, code)

    def skip_because(self, reason: str) -> None:
        """One line skipped for `reason` (said so that an operator knows what to change)."""
        self.skip_reasons[reason] = self.skip_reasons.get(reason, 0) + 1

    def note(self, source: str | None, what: str) -> None:
        if source is None:
            return
        notes = self.notes.get(source)
        if notes is None:
            notes = self.notes[source] = {}
        notes[what] = notes.get(what, 0) + 1

    def capture(self) -> dict:
        """What the checkpoint keeps of the engine besides the books (JSON-serialisable)."""
        return {
            "risks": dict(self.risks),
            "replies": {key: dict(value) for key, value in self.replies.items()},
            "server_replies": {key: dict(value) for key, value in self.server_replies.items()},
            "notes": {key: dict(value) for key, value in self.notes.items()},
            "format_state": self.format_state,
        }

    def restore(self, saved: dict) -> None:
        self.risks.update(saved.get("risks", {}))
        self.replies.update(saved.get("replies", {}))
        self.server_replies.update(saved.get("server_replies", {}))
        self.notes.update(saved.get("notes", {}))
        self.format_state.update(saved.get("format_state", {}))


def _count_reply(table: dict[str, dict[str, int]], key: str, code: int) -> None:
    counts = table.get(key)
    if counts is None:
        counts = table[key] = {"421": 0, "4xx": 0}
    counts["4xx"] += 1
    if code == 421:
        counts["421"] += 1


def first_time(line: bytes, *, book: SessionBook, line_time: Callable, stamp_of: Callable
               ) -> float | None:  # fmt: skip
    """The time of a file's first readable line, which is where its stream begins."""
    when = line_time(line, stamp_of)
    if when is not None:
        book.begin_stream(when)
    return when
