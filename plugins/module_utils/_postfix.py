"""Postfix logs: the line shapes that open, end and score SMTP sessions.

The reader works on bytes. A cheap substring test rejects lines of other programs before
anything is split (every smtpd line counts: besides its events, it shows when its session was
last alive), each distinct timestamp string is parsed once, and a session is keyed by
host + program + pid, so that several gateways, instances (`postfix-out/smtpd`) and services
(`postfix/submission/smtpd`) in one file stay apart.
Only the peer address that Postfix itself wrote in `name[address]` after `connect from`
ever becomes a source; text a client sent (HELO, commands) is never read.

The hot loop takes the common line shape and an smtpd event apart with one match each, and
skips `ipaddress` for addresses already in canonical IPv4 form; `split_line`, `strip_queue_id`
and `peer_address` are the readable forms of those matches, and test_fast_paths holds each
shortcut to them. benchmarks/RESULTS.md has the profile that called for them.
"""

from __future__ import annotations

import re
import socket
from socket import AF_INET
from typing import Callable, Iterable

from ansible_collections.campusnet.smtpguard.plugins.module_utils._addresses import (
    normalise_address,
)
from ansible_collections.campusnet.smtpguard.plugins.module_utils._engine import Engine, Stats
from ansible_collections.campusnet.smtpguard.plugins.module_utils._sessions import SessionBook

NAME = "postfix"

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
# How Postfix tags an IPv6 peer in some messages: [IPv6:2001:db8::25].
_IPV6_TAGS = (b"IPv6:", b"ipv6:")

# "NOQUEUE", a short queue id (upper-case hex) or a long one (a base-52 alphabet without
# vowels). A severity such as "warning" or "fatal" is not a queue id: what follows it may
# quote a client.
_QUEUE_ID = re.compile(rb"NOQUEUE|[0-9A-F]{6,20}|[0-9B-DF-HJ-NP-TV-Zb-df-hj-np-tv-z]{10,24}")

# First bytes of a plausible log line: a month name (syslog, maillog_file) or a digit
# (RFC 3339). Anything else is junk and counts as skipped.
_PLAUSIBLE_FIRST = frozenset(b"JFMASOND0123456789")

_DIGITS = frozenset(b"0123456789")

# The shape of nearly every line, "<stamp> <host> <program>[<pid>]: ", with a syslog or
# maillog_file stamp (15 bytes) or an RFC 3339 one. Where it matches, its groups are what
# split_line would return (test_fast_paths pins that); other lines go through split_line.
_COMMON_LINE = re.compile(
    rb"([A-Z][a-z][a-z] [ 0-9][0-9] [0-9][0-9]:[0-9][0-9]:[0-9][0-9]|[0-9][^ ]*)"
    rb" ([^ \[\]]+ ([^ \[\]]+)\[[0-9]+)\]: "
)


__all__ = ["NAME", "Stats", "line_time", "looks_like", "read", "read_postfix", "split_line"]


def looks_like(lines: list[bytes]) -> bool:
    """Whether the first lines of a file are a Postfix log."""
    return any(b"postfix" in line and b"]: " in line for line in lines)


def line_time(line: bytes, stamp_of: Callable[[bytes], float | None]) -> float | None:
    """The time of one line, or None."""
    fields = split_line(line) if line else None
    return stamp_of(fields[0]) if fields is not None else None


def read(handle: Iterable[bytes], *, engine: Engine, stamp_of: Callable[[bytes], float | None],
         first: float | None = None) -> float | None:  # fmt: skip
    """The format's entry point (see `_engine`)."""
    return read_postfix(handle, book=engine.book, stamp_of=stamp_of, stats=engine.stats,
                        ranks=engine.ranks, addresses=engine.addresses, first=first)  # fmt: skip


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


def peer_address(text: bytes, start: int = 0) -> bytes | None:
    """The address in the first `name[address]` (or `[address]`) of `text[start:]`, as
    written."""
    left = text.find(b"[", start)
    if left < 0:
        return None
    right = text.find(b"]", left + 1)
    if right < 0:
        return None
    address = text[left + 1 : right]
    if address[:5] in _IPV6_TAGS:
        address = address[5:]
    return address


def _prefixes(shapes: tuple[tuple[bytes, str], ...]) -> bytes:
    """A pattern for a table of message prefixes; the first in table order wins."""
    return b"|".join(re.escape(prefix) for prefix, _ in shapes)


# An smtpd event in one match, as strip_queue_id, the prefix table and peer_address would take
# it apart step by step (test_fast_paths pins that): an optional queue id, the shape (group 1)
# and the text between the first "[" after it and the next "]" (group 2, None without one).
_SMTPD_EVENT = re.compile(
    rb"(?:(?:" + _QUEUE_ID.pattern + rb"): )?(" + _prefixes(SMTPD_SHAPES) + rb")"
    rb"(?:[^\[]*\[([^\]]*)\])?"
)
_SMTPD_KINDS = dict(SMTPD_SHAPES)
_POSTSCREEN_EVENT = re.compile(_prefixes(POSTSCREEN_SHAPES))


def read_postfix(
    handle: Iterable[bytes],
    *,
    book: SessionBook,
    stamp_of: Callable[[bytes], float | None],
    stats: Stats,
    ranks: dict[str, int],
    addresses: dict[bytes, str | None],
    first: float | None = None,
) -> float | None:
    """Feed the session events of one file to `book`; returns the first timestamp read.

    `ranks` collects the highest postscreen DNSBL rank per source; `addresses` caches the
    normalised form of each address text (None for `unknown` and for anything that is not
    an address). `first` is the file's first time when reading goes on where an earlier run
    stopped. `stats` is complete even when reading stops early (a truncated gzip).
    """
    now = book.now
    plausible = _PLAUSIBLE_FIRST
    evidence = book.evidence
    common = _COMMON_LINE.match
    smtpd_event = _SMTPD_EVENT.match
    postscreen_event = _POSTSCREEN_EVENT.match
    # Lines come in time order: most carry the same stamp as the line before.
    last_stamp, last_when = b"", None
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

            # Split: the common shape by one match, anything else by split_line.
            shape = common(line)
            if shape is not None:
                stamp, key, program = shape.group(1, 2, 3)
                message = line[shape.end() :].rstrip(b"\r\n")
            else:
                fields = split_line(line)
                if fields is None:
                    skipped += 1
                    continue
                stamp, key, program, message = fields

            if stamp != last_stamp:
                last_stamp, last_when = stamp, stamp_of(stamp)
            when = last_when
            if when is None:
                skipped += 1
                continue
            if first is None:
                first = when
                book.begin_stream(when)
            if when > now:
                after_now += 1
                continue

            # Classify: an smtpd event, a postscreen rank, or a line that shows a session alive.
            if program.endswith(b"smtpd"):
                event = smtpd_event(message)
                if event is None:
                    evidence(key, when)
                    ignored += 1
                    continue
                shape, raw = event.group(1, 2)
                kind = _SMTPD_KINDS[shape]
                if kind == ENDING:
                    evidence(key, when, ending=True)
                    parsed += 1
                    continue
            elif program.endswith(b"postscreen"):
                event = postscreen_event(message)
                if event is None:
                    ignored += 1
                elif _read_rank(message[event.end() :], ranks, addresses, stats):
                    parsed += 1  # a rank, postscreen's only shape of interest
                else:
                    skipped += 1
                continue
            else:
                ignored += 1
                continue

            # Pair: the peer address that Postfix wrote after "connect from" / "disconnect from".
            if raw is None:
                skipped += 1
                continue
            if raw[:5] in _IPV6_TAGS:
                raw = raw[5:]
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
    source = None if raw == b"unknown" else (_canonical_ipv4(raw) or normalise_address(raw))
    if source is None and raw != b"unknown":
        stats.bad_addresses += 1
    if len(addresses) < 1_000_000:
        addresses[raw] = source
    return source


def _canonical_ipv4(raw: bytes) -> str | None:
    """`raw` as text when it is an IPv4 address already in canonical form, else None.

    A shortcut past `ipaddress` for the common case: the socket library's strict parser and
    printer agree with `normalise_address` on every text that survives the round trip.
    """
    try:
        text = raw.decode("ascii")
        return text if socket.inet_ntop(AF_INET, socket.inet_pton(AF_INET, text)) == text else None
    except (OSError, UnicodeDecodeError, ValueError):
        return None


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
