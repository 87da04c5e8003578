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
pairs on the gateway (syslog's host, or `Engine.origin` for Exim's own file) + that address
and port, so logs with or without `[pid]` and `Ci=`, of any release, pair the same way.
Without `+incoming_port`, several sessions of one address are paired oldest first.

Durations. An end line's `D=` (`2m42s`, `0.125s` with `+millisec`) is the session's length:
an end whose start was not read began at end - D. Exim writes `D=` last, after the client; a
`D=` before the client's address (in a HELO name) or inside `<...>` or `"..."` is text a client
sent and is never read, and one that no session can last (more than MAX_DURATION, or
unreadable) is counted in `stats.bad_fields` and left out.

Where the client is. Each shape starts the message (after a message id for the ACL lines of
a message), and Exim writes the client right there: after the shape's own words (`SMTP
connection from `, `... H=`) or, on a line that rejects an ACL, after the leading `H=`. Only the
first bracketed address outside the HELO's parentheses becomes a source. A synchronization
error quotes the command the client sent before `H=`: the client is taken from the one `" H=`
after which Exim's own fields follow, and a line where a quoted command imitates that is
skipped rather than read. The words Exim writes after the client (`rejected connection in`,
`temporarily rejected`, `closed`) count only outside `<...>` and `"..."`, where a sender
address or a command the client chose stands, and a verdict's words only as the first
`rejected` after the client's fields (I=, U=, F=<...>): what follows `rejected RCPT <...>:`
(or MAIL, or after DATA) is an ACL's message, which may echo the client's text. Text a client
sent never decides a line's shape or its source.

Lines shipped twice. A start line read again for a connection still open (with
`+incoming_port`) and an end line read again count once, as the Postfix reader does; without
the port two starts of one address in one second are two sessions.

Internal servers. A delivery `=> ... T=... H=server [10.0.0.5] ... DT=1s` (`+deliver_time`)
is one gateway-to-server session of DT seconds in `Engine.servers`; a deferral `== ... defer
(...) H=server [10.0.0.5]: SMTP error from remote mail server after RCPT TO:<...>: 421 ...`
counts the server's 4xx. Without `DT=` a delivery line shows no session length and adds none.
"""

from __future__ import annotations

import re
from typing import Callable, Iterable

from ansible_collections.campusnet.smtpguard.plugins.module_utils._engine import Engine
from ansible_collections.campusnet.smtpguard.plugins.module_utils._sessions import RECENT_KEYS
from ansible_collections.campusnet.smtpguard.plugins.module_utils._syslog import (
    expand_repeats,
    split_syslog,
)

NAME = "exim"

START, END, REFUSED, REPLY, DELIVERY, DEFERRAL = (
    "start", "end", "refused", "reply", "delivery", "deferral"
)  # fmt: skip

# An end line's D= beyond this is no session's length: Exim drops an idle client within
# minutes (smtp_receive_timeout) and a busy one after its message limits; a week is generous.
MAX_DURATION = 7 * 86400.0

# Where a shape has Exim write the client: right after the shape's own words, or in the H=
# that follows the command a client sent (quoted) on a synchronization error.
AFTER_WORDS, AFTER_COMMAND = "after_words", "after_command"

# (words the message starts with, words Exim writes after the client, kind, note, where the
# client is, whether the line carries the session's D=): the first whose words a message has
# decides. A note is counted for the client (see Engine.NOTES).
SHAPES: tuple[tuple[bytes, bytes, str, str | None, str, bool], ...] = (
    (b"SMTP connection from ", b" (TCP/IP connection count = ", START, None, AFTER_WORDS,
     False),
    (b"SMTP connection from ", b" closed ", END, None, AFTER_WORDS, True),
    (b"SMTP connection from ", b" lost", END, None, AFTER_WORDS, True),
    (b"SMTP protocol synchronization error (input sent without waiting for greeting): "
     b"rejected connection from H=", b"", END, "rejected", AFTER_WORDS, False),
    (b"SMTP protocol synchronization error (next input sent too soon: pipelining was",
     b"", END, "rejected", AFTER_COMMAND, False),
    (b"SMTP command timeout on connection from ", b"", END, "command_time_limit",
     AFTER_WORDS, True),
    (b"SMTP command timeout on TLS connection from ", b"", END, "command_time_limit",
     AFTER_WORDS, True),
    (b"SMTP data timeout (message abandoned) on connection from ", b"", END,
     "command_time_limit", AFTER_WORDS, True),
    (b"no MAIL in SMTP connection from ", b"", END, None, AFTER_WORDS, True),
    (b"no MAIL in TFO SMTP connection from ", b"", END, None, AFTER_WORDS, True),
    (b"no MAIL in TFO* SMTP connection from ", b"", END, None, AFTER_WORDS, True),
    (b"unexpected disconnection while reading SMTP command from TFO* ", b"", END, None,
     AFTER_WORDS, True),
    (b"unexpected disconnection while reading SMTP command from TFO ", b"", END, None,
     AFTER_WORDS, True),
    (b"unexpected disconnection while reading SMTP command from ", b"", END, None,
     AFTER_WORDS, True),
    (b"SMTP call from ", b" dropped: too many ", END, "rejected", AFTER_WORDS, False),
    (b"refused connection from ", b"", END, "rejected", AFTER_WORDS, False),
    (b"H=", b" rejected connection in ", END, "rejected", AFTER_WORDS, False),
    (b"Connection from ", b" refused: too many connections", REFUSED, "connection_limit",
     AFTER_WORDS, False),
    (b"Connection from ", b" refused: load average", REFUSED, None, AFTER_WORDS, False),
    (b"H=", b" temporarily rejected ", REPLY, None, AFTER_WORDS, False),
)  # fmt: skip
# A line of interest contains one of these; every other line is counted unsplit.
_MARKS = (b"SMTP ", b"connection", b"no MAIL", b"refused", b"rejected", b"defer", b"=> ")

# "2024-03-04 10:12:00", ".123" (+millisec), " +0100" (log_timezone), " [18643]" (+pid)
_HEAD = re.compile(
    rb"([0-9]{4}-[0-9][0-9]-[0-9][0-9] [0-9][0-9]:[0-9][0-9]:[0-9][0-9](?:\.[0-9]{1,6})?)"
    rb"(?: ([+-][0-9]{4}))?(?: \[([0-9]+)\])? "
)
# A message id before the message proper: "1a2B3c-000Def-Gh" (before Exim 4.97) or
# "1v0000-000000000AB-abcd".
_MESSAGE_ID = re.compile(rb"[0-9A-Za-z]{6}-[0-9A-Za-z]{6,11}-[0-9A-Za-z]{2,4} ")
# "1h2m3s", "2m42s", "0.125s", "3d" (Exim's readconf_printtime, with fractions of +millisec)
_DURATION = re.compile(
    rb"(?:([0-9]+)w)?(?:([0-9]+)d)?(?:([0-9]+)h)?(?:([0-9]+)m)?(?:([0-9]+(?:\.[0-9]+)?)s)?"
)
_UNITS = (604800.0, 86400.0, 3600.0, 60.0, 1.0)
# What Exim writes after the H= of a synchronization error: " I=[...]:port" (optional), then
# " U=ident" or " next input=".
_AFTER_SYNC_HOST = re.compile(rb'(?: I=\[[^\]"]*\]:[0-9]+)?(?: U=| next input=")')
# What opens and closes the client's text among Exim's fields: <...> (addresses), "..."
# (quoted local parts and commands), and a backslash escape inside them.
_CLIENT_TEXT_MARKS = re.compile(rb'\\.|["<>]')
# The code of a temporary failure in a server's answer ("...: 421 4.3.2 busy")
_SERVER_CODE = re.compile(rb": (4[0-9][0-9])[ -]")
# The word of Exim's verdict on a line that names a client: "rejected connection in", "rejected
# RCPT <...>: <the ACL's message>", "temporarily rejected ...".
VERDICT = b" rejected "
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
    """Seconds of an Exim duration such as b"2m42s", or None for text that is none or for a
    length no session has (more than MAX_DURATION)."""
    match = _DURATION.fullmatch(text)
    if match is None or not text:
        return None
    pairs = zip(match.groups(), _UNITS, strict=True)
    seconds = sum(float(value) * unit for value, unit in pairs if value)
    return seconds if seconds <= MAX_DURATION else None  # inf fails the comparison too


def peer(message: bytes, start: int = 0) -> tuple[bytes, bytes] | None:
    """(address, port) of the client that Exim names from `start` on: the first `[address]`
    that stands after a space or at `start` outside the parentheses of a HELO. The port is b""
    when Exim did not log it."""
    found = _peer(message, start)
    return None if found is None else found[:2]


def _peer(message: bytes, start: int) -> tuple[bytes, bytes, int] | None:
    """peer(), and where the client's `[address]:port` ends."""
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
            stop = close + 1
            if message[stop : stop + 1] == b":":
                stop += 1
                while stop < end and 48 <= message[stop] <= 57:
                    stop += 1
            return address, message[close + 2 : stop], stop
        position += 1
    return None


def read(handle: Iterable[bytes], *, engine: Engine, stamp_of: Callable[[bytes], float | None],
         first: float | None = None) -> float | None:  # fmt: skip
    """The format's entry point (see `_engine`)."""
    stats = engine.stats
    book = engine.book
    now = book.now
    pairing = _Pairing(book.open_sessions)
    origin = engine.origin  # the gateway of Exim's own file, whose lines name none
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

            outcome = _event(message, host=host or origin, when=when, engine=engine,
                             pairing=pairing)  # fmt: skip
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
    message_id = _MESSAGE_ID.match(message)
    if message_id is not None:
        rest = message[message_id.end() :]
        if rest[:3] in (b"=> ", b"== "):
            kind = DELIVERY if rest[:3] == b"=> " else DEFERRAL
            if kind == DEFERRAL and b" defer (" not in rest:
                return False
            return _server_event(rest, kind=kind, message_id=message[: message_id.end() - 1],
                                 host=host, when=when, engine=engine)  # fmt: skip
        if not rest.startswith(b"H="):
            return False
        message = rest  # an ACL's verdict on a message, such as a 4xx after DATA

    shape, named = _shape(message)
    if shape is None:
        # Its words without a client, or "SMTP connection from ..." that neither starts nor
        # ends: a line cut short.
        return None if named or message.startswith(b"SMTP connection from ") else False
    address, port, end = named
    _words, _after, kind, note, _where, timed = shape
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
    if b"without waiting for greeting" in message[: len(shape[0])]:
        engine.note(source, "pregreet")
    if _sync_error_goes_on(message, shape):
        return True

    base = host + b" [" + address + b"]:" + port
    book = engine.book
    if kind == START:
        keys = pairing.keys.get(base)
        if port and keys and book.repeated_start(keys[-1], when):
            return True  # the same start line again (a log shipped twice)
        book.connect(pairing.open(base), when, source)
        return True
    if _after_client(message, b" temporarily rejected ", end):
        engine.reply(source, DEFER_CODE)
    duration = _duration(message, end, engine=engine) if timed else None
    key = pairing.close(base)
    if key is None:
        if any(book.repeated_end(name, when) for name in pairing.ended(base)):
            return True  # the same end line again (a log shipped twice)
        key = base
        if duration is not None:  # its start was not read: D= says when it was
            book.connect(key, when - duration, source)
    book.disconnect(key, when, source)
    return True


def _shape(message: bytes) -> tuple[tuple, tuple[bytes, bytes, int]] | tuple[None, bool]:
    """The shape of a message and its client's (address, port, where it ends); or None and
    whether the words of a shape that names no other client began it without a readable
    client (a line cut short, or quoted text that imitates Exim's)."""
    unread = False
    for shape in SHAPES:
        words, after, _kind, _note, where, _timed = shape
        if not message.startswith(words):
            continue
        found = _peer(message, len(words)) if where == AFTER_WORDS else _sync_client(message)
        if found is None:
            unread = unread or not after
            continue
        if after and not _after_client(message, after, found[2]):
            continue
        return shape, found
    return None, unread


def _after_client(message: bytes, words: bytes, start: int) -> bool:
    """Whether Exim wrote `words` after the client's address (which ends at `start`), outside
    the client's text. Words of a verdict (" rejected ") count only as Exim's verdict: the first
    " rejected " after its fields (I=, U=, F=<...>); what follows `rejected RCPT <...>:` (or
    MAIL, or after DATA) is an ACL's message, which may echo the client's text."""
    verdict = words.find(VERDICT)
    if verdict < 0:
        return _outside_client_text(message, words, start) >= 0
    at = _outside_client_text(message, VERDICT, start)
    return at >= verdict and message.startswith(words, at - verdict)


def _outside_client_text(message: bytes, text: bytes, start: int) -> int:
    """Where `text` first stands in `message` from `start` (the end of the client's address)
    on outside `<...>` and `"..."`, the client's text among Exim's fields (a sender or
    recipient address, a quoted command), or -1."""
    at = message.find(text, start)
    if at < 0:
        return -1
    depth = 0
    quoted = False
    for mark in _CLIENT_TEXT_MARKS.finditer(message, start):
        while 0 <= at < mark.start():
            if not quoted and not depth:
                return at
            at = message.find(text, at + 1)
        if at < 0:
            return -1
        byte = mark.group()
        if byte == b'"':
            quoted = not quoted
        elif quoted or byte[:1] == b"\\":
            continue
        elif byte == b"<":
            depth += 1
        elif depth:
            depth -= 1
    return at if not quoted and not depth else -1


def _sync_client(message: bytes) -> tuple[bytes, bytes, int] | None:
    """The client of `... rejected "<command>" H=<client> [I=...] [U=...] next input="..."`:
    the H= after a closing quote that Exim's own fields follow. The command is the client's
    text (quoted raw before Exim 4.98, escaped since): a line where it imitates that H= too is
    ambiguous, and no client is read from it."""
    opened = message.find(b'rejected "')
    if opened < 0:
        return None
    found = None
    at = message.find(b'" H=', opened + 10)
    while at >= 0:
        candidate = _peer(message, at + 4)
        if candidate is not None and _AFTER_SYNC_HOST.match(message, candidate[2]):
            if found is not None:
                return None
            found = candidate
        at = message.find(b'" H=', at + 4)
    return found


def _sync_error_goes_on(message: bytes, shape: tuple) -> bool:
    """Whether a synchronization error leaves the session open: one in a BDAT chunk, after
    which Exim waits for RSET instead of dropping the connection."""
    if shape[4] != AFTER_COMMAND:
        return False
    opened = message.find(b'rejected "')
    return message[opened + 10 : opened + 15].upper() == b"BDAT "


def _duration(message: bytes, after: int, *, engine: Engine) -> float | None:
    """The session length of Exim's own D= on an end line: the last one after the client's
    address (`after`), not inside `<...>` or `"..."`. None without one; a value no session
    has is counted in stats.bad_fields and left out."""
    at = _outside_client_text(message, b" D=", after)
    if at < 0:
        return None
    # Exim writes D= last; from a place outside the client's text the scan starts afresh.
    while (later := _outside_client_text(message, b" D=", at + 3)) >= 0:
        at = later
    end = message.find(b" ", at + 3)
    duration = parse_duration(message[at + 3 : end if end >= 0 else len(message)])
    if duration is None:
        engine.stats.bad_fields += 1
    return duration


def _outside_quotes(message: bytes, text: bytes, start: int = 0) -> int:
    """Where `text` first stands in `message` from `start` on outside "..." (an address a
    client chose, a server's quoted answer), or -1."""
    at = message.find(text, start)
    while at >= 0:
        before = message[:at]
        if (before.count(b'"') - before.count(b'\\"')) % 2 == 0:
            return at
        at = message.find(text, at + 1)
    return -1


def _server_event(message: bytes, *, kind: str, message_id: bytes, host: bytes, when: float,
                  engine: Engine) -> bool | None:  # fmt: skip
    """A delivery (`=> addr R=... T=... H=server [10.0.0.5] ... DT=1s`) or a deferral (`==
    addr ... defer (-46) H=server [10.0.0.5]: ... 421 ...`); `message` starts at the arrow."""
    at = _outside_quotes(message, b" H=")
    if at < 0:
        return False  # a local delivery
    named = _peer(message, at + 3)
    if named is None:
        return None
    server = engine.source(named[0])
    if server is None:
        return None
    if kind == DEFERRAL:
        code = _SERVER_CODE.search(message, named[2])
        if code is not None:
            engine.server_reply(server, int(code.group(1)))
        return True
    spent = _outside_quotes(message, b" DT=", named[2])
    if spent < 0:
        return True
    end = message.find(b" ", spent + 4)
    duration = parse_duration(message[spent + 4 : end if end >= 0 else len(message)])
    if duration is None:
        engine.stats.bad_fields += 1  # no session length to add
        return True
    key = host + b" => " + message_id + b" " + named[0]
    engine.servers.connect(key, when - duration, server)
    engine.servers.disconnect(key, when, server)
    return True


class _Pairing:
    """Open session keys per client connection (gateway + `[address]:port`). A connection
    seen open twice (no port logged, several sessions of one address) gets keys `#2`, `#3`, ...
    and the oldest is closed first. Rebuilt from the book, so it goes on across runs; the key
    each connection closed last is remembered for a while, to know an end line read twice."""

    def __init__(self, open_sessions: dict) -> None:
        self.keys: dict[bytes, list[bytes]] = {}
        numbered = sorted(
            (key for key in open_sessions if isinstance(key, bytes)),
            key=lambda key: (key.partition(b"#")[0], int(key.partition(b"#")[2] or 1)),
        )
        for key in numbered:
            self.keys.setdefault(key.partition(b"#")[0], []).append(key)
        self.serial = 1 + max((int(key.partition(b"#")[2] or 1) for key in numbered), default=1)
        self.closed: dict[bytes, bytes] = {}

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
        if len(self.closed) >= RECENT_KEYS:
            self.closed.clear()
        self.closed[base] = key
        return key

    def ended(self, base: bytes) -> tuple[bytes, ...]:
        """The keys an end line of `base` with no session open may repeat the end of: the
        connection's last closed key, and `base` (an end whose start was not read)."""
        last = self.closed.get(base)
        return (base,) if last is None or last == base else (last, base)
