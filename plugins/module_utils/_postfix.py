"""Postfix logs: the line shapes that open, end and score SMTP sessions.

The reader works on bytes. A cheap substring test rejects lines of other programs before
anything is split (every smtpd line counts: besides its events, it shows when its session was
last alive), each distinct timestamp string is parsed once, and a session is keyed by
host + program + pid, so that several gateways, instances (`postfix-out/smtpd`) and services
(`postfix/submission/smtpd`) in one file stay apart.
Only the peer address that Postfix itself wrote in `name[address]` after `connect from`
ever becomes a source; text a client sent (HELO, commands) is never read.
"""

from __future__ import annotations

import re
from typing import BinaryIO, Callable

from ansible_collections.campusnet.smtpguard.plugins.module_utils._addresses import (
    normalise_address,
)
from ansible_collections.campusnet.smtpguard.plugins.module_utils._sessions import SessionBook

CONNECT, DISCONNECT, ENDING, RANK = "connect", "disconnect", "ending", "rank"

# smtpd message shapes, after an optional "NOQUEUE: " or queue-id prefix.
SMTPD_SHAPES: tuple[tuple[bytes, str], ...] = (
    (b"connect from ", CONNECT),
    (b"disconnect from ", DISCONNECT),
    (b"lost connection after ", ENDING),
    (b"timeout after ", ENDING),
    (b"too many errors after ", ENDING),
)
# postscreen shapes that carry a risk.
POSTSCREEN_SHAPES: tuple[tuple[bytes, str], ...] = ((b"DNSBL rank ", RANK),)

# Substrings that any line of interest contains; everything else is rejected unsplit. Every
# smtpd line is of interest: besides its events it shows that its session was still alive.
_MARK_SMTPD = b"smtpd["
_MARK_RANK = b"DNSBL rank "
# Substrings of the smtpd messages that can be events; other smtpd lines only show that their
# session was alive.
_MARK_CONNECT = b"connect from "
_MARK_AFTER = b" after "

# "NOQUEUE", a short queue id (upper-case hex) or a long one (a base-52 alphabet without
# vowels). A severity such as "warning" or "fatal" is not a queue id: what follows it may
# quote a client.
_QUEUE_ID = re.compile(rb"NOQUEUE|[0-9A-F]{6,20}|[0-9B-DF-HJ-NP-TV-Zb-df-hj-np-tv-z]{10,24}")

# First bytes of a plausible log line: a month name (syslog, maillog_file) or a digit
# (RFC 3339). Anything else is junk and counts as skipped.
_PLAUSIBLE_FIRST = frozenset(b"JFMASOND0123456789")

_DIGITS = frozenset(b"0123456789")


class Stats:
    __slots__ = ("lines", "parsed", "ignored", "skipped", "after_now", "bad_addresses")

    def __init__(self) -> None:
        self.lines = self.parsed = self.ignored = self.skipped = 0
        self.after_now = self.bad_addresses = 0

    def as_dict(self) -> dict:
        return {name: getattr(self, name) for name in self.__slots__}


def looks_like(lines: list[bytes]) -> bool:
    """Whether the first lines of a file are a Postfix log."""
    return any(b"postfix" in line and b"]: " in line for line in lines)


def split_line(line: bytes) -> tuple[bytes, bytes, bytes, bytes] | None:
    """(timestamp, session key, program, message) of a syslog-style line, or None."""
    if line[0] in _DIGITS:
        space = line.find(b" ")
        if space < 0:
            return None
        stamp, position = line[:space], space + 1
    else:
        if line[15:16] != b" ":
            return None
        stamp, position = line[:15], 16
    end = line.find(b"]: ", position)
    if end < 0:
        return None
    bracket = line.rfind(b"[", position, end)
    if bracket < 0:
        return None
    space = line.rfind(b" ", position, bracket)
    program = line[space + 1 : bracket] if space >= 0 else line[position:bracket]
    pid = line[bracket + 1 : end]
    if not pid.isdigit():
        return None
    message = line[end + 3 :].rstrip(b"\r\n")
    return stamp, line[position:end], program, message


def strip_queue_id(message: bytes) -> bytes:
    """Drop a leading "NOQUEUE: " or "<queue id>: " (Postfix 3.10+ writes them on more lines)."""
    if message.startswith(b"NOQUEUE: "):
        return message[9:]
    colon = message.find(b": ", 0, 26)
    if colon > 0 and _QUEUE_ID.fullmatch(message, 0, colon):
        return message[colon + 2 :]
    return message


def peer_address(text: bytes) -> bytes | None:
    """The address in the first `name[address]` (or `[address]`) of `text`, as written."""
    left = text.find(b"[")
    if left < 0:
        return None
    right = text.find(b"]", left + 1)
    if right < 0:
        return None
    address = text[left + 1 : right]
    if address[:5] in (b"IPv6:", b"ipv6:"):
        address = address[5:]
    return address


def classify(message: bytes, shapes: tuple[tuple[bytes, str], ...]) -> tuple[str, int] | None:
    for prefix, kind in shapes:
        if message.startswith(prefix):
            return kind, len(prefix)
    return None


def read_postfix(
    handle: BinaryIO,
    *,
    book: SessionBook,
    stamp_of: Callable[[bytes], float | None],
    stats: Stats,
    ranks: dict[str, int],
    addresses: dict[bytes, str | None],
) -> float | None:
    """Feed the session events of one file to `book`; returns the first timestamp read.

    `ranks` collects the highest postscreen DNSBL rank per source; `addresses` caches the
    normalised form of each address text (None for `unknown` and for anything that is not
    an address). `stats` is complete even when reading stops early (a truncated gzip).
    """
    now = book.now
    first: float | None = None
    plausible = _PLAUSIBLE_FIRST
    evidence = book.evidence
    # Counted in locals, which the hot loop updates much faster than attributes.
    lines = parsed = ignored = skipped = after_now = 0

    try:
        for line in handle:
            lines += 1
            if _MARK_SMTPD not in line and _MARK_RANK not in line:
                if first is None:
                    first = _first_time(line, book=book, stamp_of=stamp_of)
                if line[0] in plausible and b": " in line:
                    ignored += 1
                else:
                    skipped += 1
                continue

            fields = split_line(line)
            if fields is None:
                skipped += 1
                continue
            stamp, key, program, message = fields
            when = stamp_of(stamp)
            if when is None:
                skipped += 1
                continue
            if first is None:
                first = when
                book.begin_stream(when)
            if when > now:
                after_now += 1
                continue

            if program.endswith(b"smtpd"):
                if _MARK_CONNECT in message or _MARK_AFTER in message:
                    body = strip_queue_id(message)
                    event = classify(body, SMTPD_SHAPES)
                else:
                    event = None
                if event is None:
                    # Any other line of a session shows that it was still alive then.
                    evidence(key, when)
                    ignored += 1
                    continue
            elif program.endswith(b"postscreen"):
                body = message
                event = classify(body, POSTSCREEN_SHAPES)
                if event is None:
                    ignored += 1
                    continue
            else:
                ignored += 1
                continue

            kind, length = event
            if kind == ENDING:
                evidence(key, when, ending=True)
                parsed += 1
                continue
            if kind == RANK:
                if _read_rank(body[length:], ranks, addresses, stats):
                    parsed += 1
                else:
                    skipped += 1
                continue

            raw = peer_address(body[length:])
            if raw is None:
                skipped += 1
                continue
            source = addresses.get(raw, False)
            if source is False:
                source = _normalise(raw, addresses, stats)
            if kind == CONNECT:
                book.connect(key, when, source)
            else:
                book.disconnect(key, when, source)
            parsed += 1
    finally:
        stats.lines += lines
        stats.parsed += parsed
        stats.ignored += ignored
        stats.skipped += skipped
        stats.after_now += after_now

    return first


def _first_time(
    line: bytes, *, book: SessionBook, stamp_of: Callable[[bytes], float | None]
) -> float | None:
    """The time of a file's first readable line: where the stream of lines begins."""
    fields = split_line(line)
    when = stamp_of(fields[0]) if fields is not None else None
    if when is not None:
        book.begin_stream(when)
    return when


def _normalise(raw: bytes, addresses: dict[bytes, str | None], stats: Stats) -> str | None:
    source = None if raw == b"unknown" else normalise_address(raw)
    if source is None and raw != b"unknown":
        stats.bad_addresses += 1
    if len(addresses) < 1_000_000:
        addresses[raw] = source
    return source


def _read_rank(
    text: bytes, ranks: dict[str, int], addresses: dict[bytes, str | None], stats: Stats
) -> bool:
    # "3 for [192.0.2.9]:52342"
    number, _, rest = text.partition(b" for ")
    try:
        rank = int(number)
    except ValueError:
        return False
    raw = peer_address(rest)
    if raw is None:
        return False
    source = addresses.get(raw, False)
    if source is False:
        source = _normalise(raw, addresses, stats)
    if source is None:
        return False
    if rank > ranks.get(source, -(2**31)):
        ranks[source] = rank
    return True
