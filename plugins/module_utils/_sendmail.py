"""Sendmail logs (syslog, `sm-mta[pid]` or `sendmail[pid]`): SMTP sessions by host + pid.

Sendmail forks one process per SMTP connection, so a session is keyed by the gateway (syslog's
host, or `Engine.origin` for lines without one) and the pid. Sendmail writes no line when a
connection opens or closes normally, so:
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
  timeout by then, which keeps slow posts whole). Until then it counts as open. A closing
  line of that pid and client that still comes (within HELD_LONGEST: a client that held the
  connection after its message) ends that session there instead of opening one of no length.
A closing shape with no session open (its only line) is a session of no length; the same
closing line read again (a log shipped twice) counts once, as with the Postfix reader.

Where the client is. Each shape begins the message (after a queue id), and the client is
what Sendmail writes there: after its own words (`lost input channel from name [addr] ...`),
before them (`name [addr] did not issue ...`: nothing but the client comes first, so that a
`<recipient>... User unknown` that quotes these words is no shape), or in the relay= field of
a line of `name=value` fields. Sendmail writes one relay= field, at a known place: last on a
`from=` line (after the msgid a client chose); right before `reject=` on a `ruleset=` line,
after the rule's arguments (`arg1=`, `arg2=`), which Sendmail writes unbracketed, so that a
line with more than one relay= (or none right before the verdict) is ambiguous and skipped,
counted as such; and first among the fields split at ", " outside `<...>` and `"..."` on the
others (`to=`, `AUTH=`, `STARTTLS=`), so that a relay= inside an address, a message id or a
reject text is never read; its address is the value's last `[...]`, after the name the
client's DNS gave. Text a client sent never decides a line's shape.
`rejecting commands from ... due to pre-greeting traffic` notes "pregreet" and the session
goes on; timeouts note "command_time_limit"; `reject=4xx` counts a temporary failure for the
client. Delivery lines (`to=... relay=server [addr] ... stat=Deferred: 421 ...`) count the
internal server's 4xx; they show no session length, so they add no server sessions.
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

NAME = "sendmail"
PROGRAMS = (b"sm-mta", b"sendmail")

# A session silent this long after a settled message, while the log goes on, ended at its
# last line; after any other line, one silent for COMMAND_TIMEOUT did.
SILENT_END = 120.0
COMMAND_TIMEOUT = 3600.0
# How long after its last line a session that silence ended may still see its closing line
# (a timeout, a lost input channel): the client's last command came at most about then, and
# Sendmail drops a client silent for Timeout.command.
HELD_LONGEST = COMMAND_TIMEOUT + SILENT_END

CLOSE, NAMES, DELIVERY, AMBIGUOUS = "close", "names", "delivery", "ambiguous"
# Why a ruleset= line whose relay= Sendmail's is not told apart from a client's is skipped.
AMBIGUOUS_RELAY = (
    "a ruleset= line has more than one relay= field, or none where Sendmail writes it (right "
    "before reject=): the client's text imitates Sendmail's, and the line names nobody"
)
# The verdict of a ruleset, which Sendmail writes right after relay=.
_VERDICTS = (b"reject=", b"quarantine=")

# (the words a message starts with, kind, note, words the client follows): the first that a
# message starts with decides. "rejecting commands from" counts only with PREGREET after the
# client. Lines of name=value fields and "did not issue" lines are read apart (see _shape).
SHAPES: tuple[tuple[bytes, str, str | None, bytes], ...] = (
    (b"lost input channel from ", CLOSE, None, b"lost input channel from "),
    (b"timeout waiting for input from ", CLOSE, "command_time_limit",
     b"timeout waiting for input from "),
    (b"collect: read timeout", CLOSE, "command_time_limit", b"connection from "),
    (b"collect: ", CLOSE, None, b"connection from "),
    (b"rejecting commands from ", NAMES, "pregreet", b"rejecting commands from "),
    (b"connect from ", NAMES, None, b"connect from "),
)  # fmt: skip
PREGREET = b" due to pre-greeting traffic"
# "name [addr] did not issue MAIL/EXPN/VRFY/ETRN during connection to MTA": the client first,
# as Sendmail writes it (`[addr]`, `name [addr]`, `user@name [addr]`, maybe `(may be forged)`)
# from the message's start; a message that starts otherwise (with `<` of an address a client
# chose) only quotes these words. Group 1 is the address.
DID_NOT_ISSUE = b" did not issue MAIL/EXPN/VRFY/ETRN during connection to "
_DID_NOT_ISSUE = re.compile(
    rb'(?:[^ \[\]<>"=,]+ )?\[([^ \[\]]+)\](?: \(may be forged\))?' + re.escape(DID_NOT_ISSUE)
)
# A line of Sendmail's `name=value, ...` fields: from=, to=, ruleset=, AUTH=, STARTTLS=.
_FIELDS = re.compile(rb"[A-Za-z_]+=")
# What splits fields (", "), and what keeps a ", " inside a value: <...>, "...", \\x.
_FIELD_TOKENS = re.compile(rb'\\.|["<>]|, ')
_CODE = re.compile(rb"([45][0-9][0-9])")
_DEFERRED = re.compile(rb"Deferred: (4[0-9][0-9])")
# A queue id ("w23NZFZk014956", "KAA12345": letters and digits, some digits) or "NOQUEUE"
# before the message proper; "collect: " is none.
_QUEUE_ID = re.compile(rb"(?:NOQUEUE|(?=[0-9A-Za-z]{3,20}: )[A-Za-z]*[0-9][0-9A-Za-z]*): ")

__all__ = ["COMMAND_TIMEOUT", "NAME", "SILENT_END", "client", "line_time", "looks_like", "read",
           "relay_address", "relay_value", "ruleset_relay", "split_fields"]  # fmt: skip


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


def split_fields(message: bytes) -> list[bytes]:
    """The `name=value` fields of a line, split at ", " outside `<...>` and `"..."` (an
    address or a message id may hold ", ")."""
    fields = []
    start = depth = 0
    quoted = False
    for token in _FIELD_TOKENS.finditer(message):
        text = token.group()
        if text[:1] == b"\\":
            continue
        if text == b'"':
            quoted = not quoted
        elif quoted:
            continue
        elif text == b"<":
            depth += 1
        elif text == b">":
            depth = max(0, depth - 1)
        elif depth == 0:
            fields.append(message[start : token.start()])
            start = token.end()
    fields.append(message[start:])
    return fields


def relay_value(message: bytes, fields: list[bytes]) -> bytes | None:
    """The value of the relay= field Sendmail wrote on a line of fields, or None (also for a
    ruleset= line where it cannot be told apart, see `ruleset_relay`)."""
    if message.startswith(b"from="):
        # Sendmail ends a from= line with relay= (after the msgid, which a client chose).
        at = message.rfind(b", relay=")
        if at < 0:
            return None
        end = message.find(b", ", at + 8)
        return message[at + 8 : end if end >= 0 else len(message)]
    if message.startswith(b"ruleset="):
        at = ruleset_relay(fields)
        return fields[at][6:] if at is not None and at >= 0 else None
    return next((field[6:] for field in fields if field.startswith(b"relay=")), None)


def ruleset_relay(fields: list[bytes]) -> int | None:
    """Where Sendmail's relay= field is among the fields of a ruleset= line, None for a line
    with none, or -1 when it cannot be told apart from the client's text.

    Sendmail writes `ruleset=R, arg1=A[, arg2=B], relay=..., reject=...` (or quarantine=),
    with the client's text unbracketed in A, B and the reject text: its relay= is the only one
    on the line and stands right before the verdict.
    """
    relays = [at for at, field in enumerate(fields) if field.startswith(b"relay=")]
    if not relays:
        return None
    at = relays[0]
    if len(relays) > 1 or at < 2 or at + 1 >= len(fields):
        return -1
    return at if fields[at + 1].startswith(_VERDICTS) else -1


def relay_address(value: bytes) -> bytes | None:
    """The address of a relay= value, as written: the last `[...]` of `name [addr]`,
    `[addr]`, `user@name [addr]`, each maybe with ` (may be forged)`; None for none."""
    if value.endswith(b" (may be forged)"):
        value = value[:-16]
    # "name [addr]", "[addr]", "user@name [addr]": the last bracket, after the DNS name.
    left = value.rfind(b"[")
    if left < 0 or not value.endswith(b"]") or (left and value[left - 1] != 32):
        return None
    return value[left + 1 : -1] or None


def read(handle: Iterable[bytes], *, engine: Engine, stamp_of: Callable[[bytes], float | None],
         first: float | None = None) -> float | None:  # fmt: skip
    """The format's entry point (see `_engine`)."""
    stats = engine.stats
    book = engine.book
    now = book.now
    # key (latin-1 text) -> [last line's time, source] of the sessions this reader keeps open
    alive: dict[str, list] = engine.format_state.setdefault("sendmail_open", {})
    # key -> [start, last line's time, source, where in book.ended] of the sessions that
    # silence ended, oldest first, for a closing line of their pid and client that may follow
    silent: dict[str, list] = engine.format_state.setdefault("sendmail_silent", {})
    origin = engine.origin  # the gateway of lines that name none
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
                _end_silent(alive, silent, book=book, until=when)
                swept = when
            newest = when if newest is None or when > newest else newest
            if program not in PROGRAMS or not pid:
                ignored += 1
                continue

            queue_id = _QUEUE_ID.match(message)
            if queue_id is not None:
                message = message[queue_id.end() :]
            outcome = _event(message, key=(host or origin) + b" " + pid, when=when,
                             engine=engine, alive=alive, silent=silent)  # fmt: skip
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
        _end_silent(alive, silent, book=book, until=newest)
    return first


def _end_silent(alive: dict[str, list], silent: dict[str, list], *, book,
                until: float) -> None:  # fmt: skip
    """End the sessions silent for more than SILENT_END (COMMAND_TIMEOUT) before `until` at
    their last line, and keep them in `silent` until no closing line of theirs can come."""
    quiet = [
        name
        for name, (last, _source, settled) in alive.items()
        if until - last > (SILENT_END if settled else COMMAND_TIMEOUT)
    ]
    for name in quiet:
        last, source, _settled = alive.pop(name)
        key = name.encode("latin-1")
        opened = book.open_sessions.get(key)
        start = opened[0] if opened is not None else last
        before = len(book.ended)
        book.disconnect(key, last, source)
        silent.pop(name, None)  # kept in the order they fell silent
        silent[name] = [start, last, source, before if len(book.ended) > before else -1]
    while silent:
        name = next(iter(silent))
        if until - silent[name][1] <= HELD_LONGEST and len(silent) <= RECENT_KEYS:
            break
        del silent[name]  # no closing line can come for it, or too many are kept


def _shape(message: bytes) -> tuple[str, str | None, bytes | None, list[bytes]] | None:
    """(kind, note, client or server address as written, the line's fields) of a message,
    or None for a line of no shape. The address is None where the shape names none."""
    if _FIELDS.match(message):
        if message.startswith(b"STARTTLS=client"):
            return None  # the gateway's own TLS to a server: it names no client
        # A from= line has no reject= or stat= to read, and its relay= is found from its end.
        fields = [] if message.startswith(b"from=") else split_fields(message)
        if message.startswith(b"ruleset=") and ruleset_relay(fields) == -1:
            return AMBIGUOUS, None, None, fields
        value = relay_value(message, fields)
        if value is None or b"[" not in value:
            return None  # no relay, or a local one (relay=root@localhost, a local delivery)
        raw = relay_address(value)
        if message.startswith(b"to="):  # a delivery: its relay= is the server, not a client
            return DELIVERY, None, raw, fields
        if message.startswith(b"ruleset=check_relay,"):
            return CLOSE, "rejected", raw, fields  # refused at connect
        return NAMES, None, raw, fields
    did_not_issue = _DID_NOT_ISSUE.match(message) if DID_NOT_ISSUE in message else None
    if did_not_issue is not None:
        return CLOSE, None, did_not_issue.group(1), []  # "name [addr] did not issue ..."
    for words, kind, note, where in SHAPES:
        if not message.startswith(words):
            continue
        if note == "pregreet" and message.find(PREGREET, len(words)) < 0:
            return None
        start = message.find(where)
        return kind, note, client(message, start + len(where)) if start >= 0 else None, []
    return None


def _event(message: bytes, *, key: bytes, when: float, engine: Engine, alive: dict[str, list],
           silent: dict[str, list]) -> bool | None:  # fmt: skip
    shape = _shape(message)
    if shape is None:
        _evidence(key, when, engine=engine, alive=alive, settled=message.startswith(b"to="))
        return False
    kind, note, raw, fields = shape

    if kind == AMBIGUOUS:
        engine.skip_because(AMBIGUOUS_RELAY)
        _evidence(key, when, engine=engine, alive=alive, settled=False)
        return None
    if kind == DELIVERY:
        server = engine.source(raw) if raw is not None else None
        if server is None:
            return None
        status = next((field[5:] for field in fields if field.startswith(b"stat=")), b"")
        deferred = _DEFERRED.match(status)
        if deferred is not None:
            engine.server_reply(server, int(deferred.group(1)))
        _evidence(key, when, engine=engine, alive=alive, settled=True)
        return True
    if raw is None and not (kind == CLOSE and message.startswith(b"collect: ")):
        return None
    source = engine.source(raw) if raw is not None else None
    if raw is not None and source is None and raw not in (b"unknown", b"IPv6:unknown"):
        return None

    name = key.decode("latin-1")
    book = engine.book
    session = alive.get(name)
    if kind == CLOSE and session is None and book.repeated_end(key, when):
        return True  # the same closing line again (a log shipped twice)
    reject = _verdict(message, fields)
    code = _CODE.match(reject)
    if code is not None:
        engine.reply(source, int(code.group(1)))
    if note is not None:
        engine.note(source, note)

    settled = message.startswith(b"from=")
    if raw is not None and (session is None or session[1] != source):
        held = silent.pop(name, None)
        if (kind == CLOSE and held is not None and held[2] == source
                and 0.0 <= when - held[1] <= HELD_LONGEST):  # fmt: skip
            # The client held the connection after its message: the session silence ended
            # lasted until this closing line of its pid.
            book.extend(key, start=held[0], end=held[1], until=when, source=source,
                        hint=held[3])  # fmt: skip
            return True
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


def _verdict(message: bytes, fields: list[bytes]) -> bytes:
    """The reject= text of a line: on a ruleset= line the one right after Sendmail's relay=
    (an earlier one is the client's text), on others the first."""
    if message.startswith(b"ruleset="):
        at = ruleset_relay(fields)
        verdict = fields[at + 1] if at is not None and at >= 0 else b""
        return verdict[7:] if verdict.startswith(b"reject=") else b""
    return next((field[7:] for field in fields if field.startswith(b"reject=")), b"")


def _evidence(key: bytes, when: float, *, engine: Engine, alive: dict[str, list],
              settled: bool) -> None:  # fmt: skip
    session = alive.get(key.decode("latin-1"))
    if session is not None:
        engine.book.evidence(key, when)
        session[0], session[2] = when, settled
