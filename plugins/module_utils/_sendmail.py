"""Sendmail logs (syslog, `sm-mta[pid]` or `sendmail[pid]`): SMTP sessions by host + pid.

Sendmail forks one process per SMTP connection, so a session is keyed by the gateway and the
pid. Sendmail writes no line when a connection opens or closes normally, so:
- a session starts at the first line of the pid that names the client (`relay=name [addr]`,
  `name [addr] did not issue ...`, `... from name [IPv6:2001:db8::a1] ...`);
- it ends at a closing shape: `did not issue MAIL/EXPN/VRFY/ETRN during connection to MTA`,
  `lost input channel from`, `timeout waiting for input from`, a `collect:` read timeout,
  I/O error or premature end, or `ruleset=check_relay ... reject=` (refused at connect);
- a line of the pid that names another client means the pid was reused: the old session
  ended at its last line;
- otherwise it ends at its last line once the pid stayed silent while the log went on (a
  session that ended with QUIT leaves no line): SILENT_END seconds after a line that settled a
  message (`from=` accepted it, `to=` delivered it), COMMAND_TIMEOUT seconds after any other
  line (Sendmail's default `Timeout.command`: a client still waited for would have logged its
  timeout by then, which keeps slow posts whole). Until then it counts as open.
A closing shape with no session open (its only line) is a session of no length.
`rejecting commands from ... due to pre-greeting traffic` notes "pregreet" and the session
goes on; timeouts note "command_time_limit"; `reject=4xx` counts a temporary failure for the
client. Delivery lines (`to=... relay=server [addr] ... stat=Deferred: 421 ...`) count the
internal server's 4xx; they show no session length, so they add no server sessions.
"""

from __future__ import annotations

import re
from typing import Callable, Iterable

from ansible_collections.campusnet.smtpguard.plugins.module_utils._engine import Engine
from ansible_collections.campusnet.smtpguard.plugins.module_utils._syslog import (
    expand_repeats,
    split_syslog,
)

NAME = "sendmail"
PROGRAMS = (b"sm-mta", b"sendmail")

# A session silent this long after a settled message, while the log goes on, ended at its
# last line; after any other line, one silent for COMMAND_TIMEOUT did.
SILENT_END = 120.0
COMMAND_TIMEOUT = 3600.0

CLOSE, NAMES, DELIVERY = "close", "names", "delivery"

# (substring, kind, note, where the client is named): the first that a message holds decides.
# A message that begins with "to=" is a delivery (DELIVERY) and names a server instead.
SHAPES: tuple[tuple[bytes, str, str | None, bytes], ...] = (
    (b"ruleset=check_relay", CLOSE, "rejected", b"relay="),
    (b"did not issue MAIL/EXPN/VRFY/ETRN", CLOSE, None, b""),
    (b"lost input channel from ", CLOSE, None, b"lost input channel from "),
    (b"timeout waiting for input from ", CLOSE, "command_time_limit",
     b"timeout waiting for input from "),
    (b"collect: read timeout", CLOSE, "command_time_limit", b"connection from "),
    (b"collect: ", CLOSE, None, b"connection from "),
    (b"due to pre-greeting traffic", NAMES, "pregreet", b"rejecting commands from "),
    (b"relay=", NAMES, None, b"relay="),
    (b"connect from ", NAMES, None, b"connect from "),
)  # fmt: skip
_REJECT = re.compile(rb"reject=([45][0-9][0-9])")
_DEFERRED = re.compile(rb"stat=Deferred: (4[0-9][0-9])")
# A queue id ("w23NZFZk014956") or "NOQUEUE" before the message proper.
_QUEUE_ID = re.compile(rb"(?:NOQUEUE|[0-9A-Za-z]{8,20}): ")

__all__ = ["COMMAND_TIMEOUT", "NAME", "SILENT_END", "client", "line_time", "looks_like", "read"]


def looks_like(lines: list[bytes]) -> bool:
    """Whether the first lines of a file are a Sendmail log."""
    for line in lines:
        if b"sm-mta[" not in line and b"sendmail[" not in line:
            continue
        fields = split_syslog(line)
        if fields is not None and fields[2] in PROGRAMS and fields[3]:
            return True
    return False


def line_time(line: bytes, stamp_of: Callable[[bytes], float | None]) -> float | None:
    """The time of one line, or None."""
    fields = split_syslog(line)
    return stamp_of(fields[0]) if fields is not None else None


def client(message: bytes, start: int) -> bytes | None:
    """The address of `name [addr]` or `[IPv6:addr]` from `start` on, as written (IPv6 tag
    kept), or None. Only the first bracket after the shape's own text is read."""
    left = message.find(b"[", start)
    if left < 0:
        return None
    right = message.find(b"]", left + 1)
    if right < 0:
        return None
    between = message[start:left]
    if b"," in between or b"=" in between:
        return None  # the bracket belongs to a later field, not to this client
    return message[left + 1 : right]


def read(handle: Iterable[bytes], *, engine: Engine, stamp_of: Callable[[bytes], float | None],
         first: float | None = None) -> float | None:  # fmt: skip
    """The format's entry point (see `_engine`)."""
    stats = engine.stats
    book = engine.book
    now = book.now
    # key (latin-1 text) -> [last line's time, source] of the sessions this reader keeps open
    alive: dict[str, list] = engine.format_state.setdefault("sendmail_open", {})
    last_stamp, last_when = b"", None
    newest = swept = None
    lines = parsed = ignored = skipped = after_now = 0

    try:
        for line in expand_repeats(handle):
            lines += 1
            fields = split_syslog(line)
            if fields is None:
                skipped += 1
                continue
            stamp, host, program, pid, message = fields
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
            if swept is None or when - swept > SILENT_END / 4:
                _end_silent(alive, book=book, until=when)
                swept = when
            newest = when if newest is None or when > newest else newest
            if program not in PROGRAMS or not pid:
                ignored += 1
                continue

            queue_id = _QUEUE_ID.match(message)
            if queue_id is not None:
                message = message[queue_id.end() :]
            outcome = _event(message, key=host + b" " + pid, when=when, engine=engine,
                             alive=alive)  # fmt: skip
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

    if newest is not None:
        _end_silent(alive, book=book, until=newest)
    return first


def _end_silent(alive: dict[str, list], *, book, until: float) -> None:
    """End the sessions silent for more than SILENT_END before `until` at their last line."""
    silent = [
        name
        for name, (last, _source, settled) in alive.items()
        if until - last > (SILENT_END if settled else COMMAND_TIMEOUT)
    ]
    for name in silent:
        last, source, _settled = alive.pop(name)
        book.disconnect(name.encode("latin-1"), last, source)


def _event(message: bytes, *, key: bytes, when: float, engine: Engine,
           alive: dict[str, list]) -> bool | None:  # fmt: skip
    if message.startswith(b"to="):  # a delivery: its relay= is the server, not a client
        shape = (b"to=", DELIVERY, None, b"relay=")
    else:
        shape = next((shape for shape in SHAPES if shape[0] in message), None)
    if shape is None:
        _evidence(key, when, engine=engine, alive=alive, settled=message.startswith(b"to="))
        return False
    _mark, kind, note, where = shape

    if kind == CLOSE and where == b"":
        raw = client(message, 0)  # "name [addr] did not issue ..."
    else:
        start = message.find(where)
        raw = client(message, start + len(where)) if start >= 0 else None
    if raw is None and not (kind == CLOSE and where == b"connection from "):
        return None
    source = engine.source(raw) if raw is not None else None
    if raw is not None and source is None and raw not in (b"unknown", b"IPv6:unknown"):
        return None

    if kind == DELIVERY:
        deferred = _DEFERRED.search(message)
        if deferred is not None:
            engine.server_reply(source, int(deferred.group(1)))
        _evidence(key, when, engine=engine, alive=alive, settled=True)
        return True
    reject = _REJECT.search(message)
    if reject is not None:
        engine.reply(source, int(reject.group(1)))
    if note is not None:
        engine.note(source, note)

    name = key.decode("latin-1")
    book = engine.book
    session = alive.get(name)
    settled = message.startswith(b"from=")
    if raw is not None and (session is None or session[1] != source):
        book.connect(key, when, source)  # a new client of this pid: the old one ended
        session = alive[name] = [when, source, settled]
    elif session is not None:
        book.evidence(key, when)
        session[0], session[2] = when, settled
    if kind == CLOSE:
        alive.pop(name, None)
        if session is None:
            book.connect(key, when, source)
        book.disconnect(key, when, source)
    return True


def _evidence(key: bytes, when: float, *, engine: Engine, alive: dict[str, list],
              settled: bool) -> None:  # fmt: skip
    session = alive.get(key.decode("latin-1"))
    if session is not None:
        engine.book.evidence(key, when)
        session[0], session[2] = when, settled
