"""Exim main logs: the line shapes that open, end and score SMTP sessions.

Exim logs a session's start only with `log_selector = +smtp_connection`:
`SMTP connection from [192.0.2.1]:1418 I=[198.51.100.1]:25 (TCP/IP connection count = 3)`.
Its end is one of `SMTP connection from ... closed by QUIT` / `lost`, `SMTP command timeout`,
`SMTP data timeout`, `SMTP call from ... dropped: too many ...`, `no MAIL in SMTP connection`
(`+smtp_no_mail`), `SMTP protocol synchronization error`, `unexpected disconnection while
reading SMTP command` and a connection an ACL or `host_reject_connection` refused.

Pairing. The listening daemon writes the start line before it forks the process that serves
the connection (Exim's daemon.c), so a start line's `[pid]` (`+pid`) is the daemon's and never
the serving process's, and a connection id (`Ci=`, `+connection_id`, Exim 4.97 and later) on
it has not always matched the one on the end line across releases. Every connection line does
carry the client's `[address]:port` (`+incoming_port`), written by Exim itself: the reader
pairs on the gateway + that address and port, so logs with or without `[pid]` and `Ci=`, of
any release, pair the same way. Without `+incoming_port`, several sessions of one address are
paired oldest first.

Durations. An end line's `D=` (`2m42s`, `0.125s` with `+millisec`) is the session's length:
an end whose start was not read began at end - D. Only the first bracketed address outside the
HELO's parentheses ever becomes a source, never text a client sent.

Internal servers. A delivery `=> ... T=... H=server [10.0.0.5] ... DT=1s` (`+deliver_time`)
is one gateway-to-server session of DT seconds in `Engine.servers`; a deferral `== ... defer
(...) H=server [10.0.0.5]: SMTP error from remote mail server after RCPT TO:<...>: 421 ...`
counts the server's 4xx. Without `DT=` a delivery line shows no session length and adds none.
"""

from __future__ import annotations

import re
from typing import Callable, Iterable

from ansible_collections.campusnet.smtpguard.plugins.module_utils._engine import Engine
from ansible_collections.campusnet.smtpguard.plugins.module_utils._syslog import (
    expand_repeats,
    split_syslog,
)

NAME = "exim"

START, END, REFUSED, REPLY, DELIVERY, DEFERRAL = (
    "start", "end", "refused", "reply", "delivery", "deferral"
)  # fmt: skip

# (substring, kind, note): the first that a message contains decides. Ends name the client
# after "from " or "H="; the note is counted for the client (see Engine.NOTES).
SHAPES: tuple[tuple[bytes, str, str | None], ...] = (
    (b"(TCP/IP connection count = ", START, None),
    (b"SMTP protocol synchronization error", END, "rejected"),
    (b"SMTP command timeout on ", END, "command_time_limit"),
    (b"SMTP data timeout ", END, "command_time_limit"),
    (b"no MAIL in ", END, None),
    (b" dropped: too many ", END, "rejected"),
    (b"unexpected disconnection while reading SMTP command from ", END, None),
    (b"rejected connection in ", END, "rejected"),
    (b"refused connection from ", END, "rejected"),
    (b"SMTP connection from ", END, None),  # closed by QUIT, lost, ... (after START above)
    (b" refused: too many connections", REFUSED, "connection_limit"),
    (b" refused: load average", REFUSED, None),
    (b" temporarily rejected ", REPLY, None),
    (b" defer (", DEFERRAL, None),
    (b"=> ", DELIVERY, None),
)
# A line of interest contains one of these; every other line is counted unsplit.
_MARKS = (b"SMTP ", b"connection", b"no MAIL", b"refused", b"rejected", b"defer", b"=> ")

# "2024-03-04 10:12:00", ".123" (+millisec), " +0100" (log_timezone), " [18643]" (+pid)
_HEAD = re.compile(
    rb"([0-9]{4}-[0-9][0-9]-[0-9][0-9] [0-9][0-9]:[0-9][0-9]:[0-9][0-9](?:\.[0-9]{1,6})?)"
    rb"(?: ([+-][0-9]{4}))?(?: \[([0-9]+)\])? "
)
# "1h2m3s", "2m42s", "0.125s", "3d" (Exim's readconf_printtime, with fractions of +millisec)
_DURATION = re.compile(
    rb"(?:([0-9]+)w)?(?:([0-9]+)d)?(?:([0-9]+)h)?(?:([0-9]+)m)?(?:([0-9]+(?:\.[0-9]+)?)s)?"
)
_UNITS = (604800.0, 86400.0, 3600.0, 60.0, 1.0)
# The code of a temporary failure in a server's answer ("...: 421 4.3.2 busy")
_SERVER_CODE = re.compile(rb": (4[0-9][0-9])[ -]")
# Exim's answer to a refused connection (daemon.c) and to an ACL's defer.
REFUSED_CODE, DEFER_CODE = 421, 451

__all__ = ["NAME", "line_time", "looks_like", "parse_duration", "peer", "read", "split_line"]


def looks_like(lines: list[bytes]) -> bool:
    """Whether the first lines of a file are an Exim main log (its own file or syslog)."""
    for line in lines:
        fields = split_line(line)
        if fields is not None and (fields[4] or _exim_message(fields[3])):
            return True
    return False


def _exim_message(message: bytes) -> bool:
    return any(mark in message for mark in (b" H=", b"SMTP connection from ", b" <= ",
                                             b"Start queue run", b"daemon started"))  # fmt: skip


def line_time(line: bytes, stamp_of: Callable[[bytes], float | None]) -> float | None:
    """The time of one line, or None."""
    fields = split_line(line)
    return stamp_of(fields[0]) if fields is not None else None


def split_line(line: bytes) -> tuple[bytes, bytes, bytes, bytes, bool] | None:
    """(stamp, gateway host, pid, message, from syslog as exim) of an Exim line, or None.

    The stamp is Exim's own (zone joined without the space, as the timestamp parser reads it)
    or, for a line syslog wrote without one, syslog's. The host is b"" in Exim's own files.
    """
    head = _HEAD.match(line)
    if head is not None:
        stamp, zone, pid = head.groups()
        return (stamp + zone if zone else stamp), b"", pid or b"", line[head.end() :].rstrip(
            b"\r\n"
        ), False  # fmt: skip
    fields = split_syslog(line)
    if fields is None or fields[2] not in (b"exim", b"exim4"):
        return None
    stamp, host, _program, pid, message = fields
    inner = _HEAD.match(message)
    if inner is not None:
        own, zone, own_pid = inner.groups()
        return (own + zone if zone else own), host, own_pid or pid, message[inner.end() :], True
    return stamp, host, pid, message, True


def parse_duration(text: bytes) -> float | None:
    """Seconds of an Exim duration such as b"2m42s", or None."""
    match = _DURATION.fullmatch(text)
    if match is None or not text:
        return None
    pairs = zip(match.groups(), _UNITS, strict=True)
    return sum(float(value) * unit for value, unit in pairs if value)


def peer(message: bytes, start: int = 0) -> tuple[bytes, bytes] | None:
    """(address, port) of the client that Exim names from `start` on: the first `[address]`
    that stands after a space or at `start` outside the parentheses of a HELO. The port is b""
    when Exim did not log it."""
    depth = 0
    position = start
    end = len(message)
    while position < end:
        byte = message[position]
        if byte == 40:  # (
            depth += 1
        elif byte == 41 and depth:  # )
            depth -= 1
        elif byte == 91 and depth == 0 and (position == start or message[position - 1] == 32):
            close = message.find(b"]", position + 1)
            if close < 0:
                return None
            address = message[position + 1 : close]
            port = b""
            if message[close + 1 : close + 2] == b":":
                stop = close + 2
                while stop < end and 48 <= message[stop] <= 57:
                    stop += 1
                port = message[close + 2 : stop]
            return address, port
        position += 1
    return None


def read(handle: Iterable[bytes], *, engine: Engine, stamp_of: Callable[[bytes], float | None],
         first: float | None = None) -> float | None:  # fmt: skip
    """The format's entry point (see `_engine`)."""
    stats = engine.stats
    book = engine.book
    now = book.now
    pairing = _Pairing(book.open_sessions)
    last_stamp, last_when = b"", None
    lines = parsed = ignored = skipped = after_now = 0

    try:
        for line in expand_repeats(handle):
            lines += 1
            fields = split_line(line)
            if fields is None:
                if first is None:
                    first = _syslog_time(line, book=book, stamp_of=stamp_of)
                if line[:1].isalpha() and b": " in line:
                    ignored += 1  # another program's syslog line
                else:
                    skipped += 1
                continue
            stamp, host, _pid, message, _syslog = fields
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
            if not any(mark in message for mark in _MARKS):
                ignored += 1
                continue

            outcome = _event(message, host=host, when=when, engine=engine, pairing=pairing)
            if outcome is None:
                skipped += 1
            elif outcome:
                parsed += 1
            else:
                ignored += 1
    finally:
        stats.lines += lines
        stats.parsed += parsed
        stats.ignored += ignored
        stats.skipped += skipped
        stats.after_now += after_now

    return first


def _syslog_time(line: bytes, *, book, stamp_of) -> float | None:
    fields = split_syslog(line)
    when = stamp_of(fields[0]) if fields is not None else None
    if when is not None:
        book.begin_stream(when)
    return when


def _event(message: bytes, *, host: bytes, when: float, engine: Engine,
           pairing: _Pairing) -> bool | None:  # fmt: skip
    """Feed one message; True when it was an event, False when of no interest, None when it
    had the shape of an event but no readable client."""
    shape = next((shape for shape in SHAPES if shape[0] in message), None)
    if shape is None:
        return False
    mark, kind, note = shape
    at = message.find(mark)

    if kind in (DELIVERY, DEFERRAL):
        return _server_event(message, kind=kind, host=host, when=when, engine=engine)
    named = _client(message, kind=kind, mark=mark, at=at)
    if named is None:
        return None
    address, port = named
    source = engine.source(address)
    if source is None and address != b"unknown":
        return None
    if note is not None:
        engine.note(source, note)
    if kind == REPLY:
        engine.reply(source, DEFER_CODE)
        return True
    if kind == REFUSED:
        engine.reply(source, REFUSED_CODE)
        engine.note(source, "rejected")
        return True
    if (
        mark == b"SMTP connection from "
        and b" closed by " not in message
        and (b" lost" not in message)
    ):
        return None  # neither a start nor an end: a line cut short
    if b"without waiting for greeting" in message:
        engine.note(source, "pregreet")

    base = host + b" [" + address + b"]:" + port
    book = engine.book
    if kind == START:
        book.connect(pairing.open(base), when, source)
        return True
    if b"temporarily rejected" in message:
        engine.reply(source, DEFER_CODE)
    duration = _duration(message)
    key = pairing.close(base)
    if key is None:
        key = base
        if duration is not None:  # its start was not read: D= says when it was
            book.connect(key, when - duration, source)
    book.disconnect(key, when, source)
    return True


def _client(message: bytes, *, kind: str, mark: bytes, at: int) -> tuple[bytes, bytes] | None:
    """The client a connection line names: after the "H=" that begins a reject line, else
    after the first "from " (and its "H=") that follows the shape's own text. Both places
    lie before anything the client sent."""
    if message.startswith(b"H="):
        return peer(message, 2)
    start = message.find(b"from ", 0 if kind in (START, REFUSED) or mark[:1] == b" " else at)
    if start < 0 or (kind == END and mark == b" dropped: too many " and start > at):
        return None
    start += 5
    if message.startswith(b"H=", start):
        start += 2
    return peer(message, start)


def _duration(message: bytes) -> float | None:
    at = message.rfind(b" D=")
    if at < 0:
        return None
    end = message.find(b" ", at + 3)
    return parse_duration(message[at + 3 : end if end >= 0 else len(message)])


def _server_event(message: bytes, *, kind: str, host: bytes, when: float,
                  engine: Engine) -> bool | None:  # fmt: skip
    at = message.find(b" H=")
    if at < 0:
        return False  # a local delivery
    named = peer(message, at + 3)
    if named is None:
        return None
    server = engine.source(named[0])
    if server is None:
        return None
    if kind == DEFERRAL:
        code = _SERVER_CODE.search(message, at)
        if code is not None:
            engine.server_reply(server, int(code.group(1)))
        return True
    spent = message.rfind(b" DT=")
    if spent < 0:
        return True
    end = message.find(b" ", spent + 4)
    duration = parse_duration(message[spent + 4 : end if end >= 0 else len(message)])
    if duration is None:
        return None
    key = host + b" => " + message.split(b" ", 1)[0] + b" " + named[0]
    engine.servers.connect(key, when - duration, server)
    engine.servers.disconnect(key, when, server)
    return True


class _Pairing:
    """Open session keys per client connection (gateway + `[address]:port`). A connection
    seen open twice (no port logged, several sessions of one address) gets keys `#2`, `#3`, ...
    and the oldest is closed first. Rebuilt from the book, so it goes on across runs."""

    def __init__(self, open_sessions: dict) -> None:
        self.keys: dict[bytes, list[bytes]] = {}
        numbered = sorted(
            (key for key in open_sessions if isinstance(key, bytes)),
            key=lambda key: (key.partition(b"#")[0], int(key.partition(b"#")[2] or 1)),
        )
        for key in numbered:
            self.keys.setdefault(key.partition(b"#")[0], []).append(key)
        self.serial = 1 + max((int(key.partition(b"#")[2] or 1) for key in numbered), default=1)

    def open(self, base: bytes) -> bytes:
        keys = self.keys.setdefault(base, [])
        key = base if not keys else base + b"#%d" % self.serial
        if keys:
            self.serial += 1
        keys.append(key)
        return key

    def close(self, base: bytes) -> bytes | None:
        keys = self.keys.get(base)
        if not keys:
            return None
        key = keys.pop(0)
        if not keys:
            del self.keys[base]
        return key
