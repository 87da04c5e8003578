"""Microsoft Exchange SMTP protocol logs: sessions from the `+` and `-` events of each session id.

A protocol log is CSV (W3C-style `#` headers, then one event a line). Each file begins with

    #Software: Microsoft Exchange Server
    #Version: 15.0.0.0
    #Log-type: SMTP Receive Protocol Log
    #Date: 2023-01-11T16:00:04.113Z
    #Fields: date-time,connector-id,session-id,sequence-number,local-endpoint,
             remote-endpoint,event,data,context          (one line in the file)

and the events of one session share its session id (Microsoft's "Protocol logging in Exchange
Server" page lists the fields and the event characters: `+` connect, `-` disconnect, `>` sent,
`<` received, `*` information). In a Receive log the remote endpoint is the client, and the
`>` lines are what the gateway answered it; in a Send log the remote endpoint is the server
the gateway delivers to, and the `<` lines are that server's answers. Receive sessions feed
the engine's `book`, Send sessions its `servers`.

The `#Fields:` header is read from each file and kept in `format_state`, so that a run that
goes on in the middle of a file (with `state_path`) reads its lines by the last header seen;
such a run tells Receive from Send lines by their connector id (see `_log_type_of`), as the
last header may be another file's.
Files roll every hour and a session id goes on in the next file; sessions are keyed by the
server name in the connector id (`EXCH01\\Default Frontend EXCH01`) and the session id, so that
the logs of several Exchange servers read together stay apart.
"""

from __future__ import annotations

import csv
from typing import Callable, Iterable

from ansible_collections.campusnet.smtpguard.plugins.module_utils._engine import Engine

NAME = "exchange"

# The header Exchange 2007 to 2019 write; a file's own `#Fields:` line replaces it.
DEFAULT_FIELDS = (
    "date-time", "connector-id", "session-id", "sequence-number", "local-endpoint",
    "remote-endpoint", "event", "data", "context",
)  # fmt: skip
# The fields without which a line says nothing about a session.
REQUIRED = ("date-time", "session-id", "remote-endpoint", "event")

RECEIVE, SEND, OTHER = "receive", "send", "other"
LOG_TYPES = {
    b"SMTP Receive Protocol Log": RECEIVE,
    b"SMTP Send Protocol Log": SEND,
}

# Replies that say more than a temporary failure: (text in the reply, note).
REPLY_NOTES: tuple[tuple[bytes, str], ...] = (
    (b"maximum number of concurrent", "connection_limit"),  # 421 4.3.2 ... exceeded a limit
    (b"Connection timed out", "command_time_limit"),  # 421 4.4.1, ConnectionTimeout
)

# A quoted line that csv refuses and is longer than this (csv takes at most 128 KiB in one
# field: a huge command or reply) is read by its first LONG_LINE bytes (see _split_quoted).
LONG_LINE = 65536

_HEAD_MARKS = (b"#Software: Microsoft Exchange", b"#Fields: date-time,connector-id,session-id")

__all__ = ["NAME", "line_time", "looks_like", "read", "split_record", "endpoint_address"]


def looks_like(lines: list[bytes]) -> bool:
    """Whether the first lines of a file are an Exchange SMTP protocol log (and not another
    Exchange log, such as message tracking, that shares the `#Software:` line)."""
    marked = False
    for line in lines:
        if line.startswith(b"#Log-type: "):
            return line[11:].strip() in LOG_TYPES
        if line.startswith(_HEAD_MARKS):
            marked = True
    return marked


def line_time(line: bytes, stamp_of: Callable[[bytes], float | None]) -> float | None:
    """The time of one line, or None (headers have none)."""
    if not line or line[:1] == b"#":
        return None
    comma = line.find(b",")
    return _time(line[:comma], stamp_of) if comma > 0 else None


def endpoint_address(endpoint: bytes) -> bytes:
    """The address of an endpoint as Exchange (and .NET) writes it: `192.0.2.1:25`,
    `[2001:db8::1]:25`; a bare address is returned as it is."""
    if endpoint[:1] == b"[":
        right = endpoint.find(b"]")
        return endpoint[1:right] if right > 0 else endpoint
    if endpoint.count(b":") == 1:
        return endpoint.partition(b":")[0]
    return endpoint


def split_record(line: bytes, count: int) -> list[bytes] | None:
    """The `count` fields of one CSV line, or None for a line that is not one (truncated,
    a quote left open, another number of fields)."""
    line = line.rstrip(b"\r\n")
    if b'"' not in line:
        fields = line.split(b",")
        return fields if len(fields) == count else None
    return _split_quoted(line, count)


def _split_quoted(line: bytes, count: int) -> list[bytes] | None:
    # latin-1 maps every byte to one character and back: non-UTF-8 text survives unchanged.
    text = line.decode("latin-1")
    try:
        fields = next(csv.reader((text,), strict=True))
    except csv.Error:
        if len(line) <= LONG_LINE:
            return None
        # A field longer than csv allows (a huge reply or command): its first bytes are all
        # that is read of it, and the fields before it are whole.
        try:
            fields = next(csv.reader((text[:LONG_LINE],), strict=False))
        except csv.Error:
            return None
        if len(fields) > count:
            return None
        fields += [""] * (count - len(fields))
        return [field.encode("latin-1") for field in fields]
    if len(fields) != count:
        return None
    return [field.encode("latin-1") for field in fields]


def _time(stamp: bytes, stamp_of: Callable[[bytes], float | None]) -> float | None:
    # "2023-01-11T15:59:51.433Z": the second goes through the parser's cache, the
    # milliseconds are added here, so that the cache is not defeated by every line.
    if len(stamp) == 24 and stamp[19:20] == b"." and stamp[23:] == b"Z" and stamp[20:23].isdigit():
        second = stamp_of(stamp[:19] + b"Z")
        return None if second is None else second + int(stamp[20:23]) / 1000.0
    return stamp_of(stamp)


class _Layout:
    """Where the fields of interest are, by the last `#Fields:` and `#Log-type:` read."""

    def __init__(self, state: dict) -> None:
        self.fields = tuple(state.get("fields") or DEFAULT_FIELDS)
        self.log_type = state.get("log_type", RECEIVE)
        index = {name: position for position, name in enumerate(self.fields)}
        self.count = len(self.fields)
        self.missing = tuple(name for name in REQUIRED if name not in index)
        self.usable = not self.missing
        self.time = index.get("date-time", 0)
        self.session = index.get("session-id", 0)
        self.remote = index.get("remote-endpoint", 0)
        self.event = index.get("event", 0)
        self.data = index.get("data")
        self.connector = index.get("connector-id")


def read(handle: Iterable[bytes], *, engine: Engine, stamp_of: Callable[[bytes], float | None],
         first: float | None = None) -> float | None:  # fmt: skip
    """The format's entry point (see `_engine`): feed one file's sessions to `engine`."""
    engine.book.keys_recur = False  # a session id names one connection
    state = engine.format_state.setdefault(NAME, {})
    layout = _Layout(state)
    stats = engine.stats
    now = engine.book.now
    lines = parsed = ignored = skipped = after_now = 0
    # Whether this read saw the file's header; a read that goes on mid-file did not.
    headed = False
    # Lines come in time order: most share their second with the line before (see _time).
    last_second, last_base = b"", None
    hosts: dict[bytes, bytes] = {}  # connector id -> the host part of a session key

    try:
        for line in handle:
            lines += 1
            if line[:1] == b"#":
                layout = _header(line, layout, state)
                headed = headed or line.startswith((b"#Log-type: ", b"#Fields: "))
                ignored += 1
                continue
            if not layout.usable:
                skipped += 1
                engine.skip_because(_unusable(layout))
                continue
            fields = split_record(line, layout.count)
            log_type = layout.log_type if headed else _log_type_of(fields, layout)
            if fields is None or log_type == OTHER:
                skipped += 1
                continue

            # The time: milliseconds on the second of the line before, or parsed (see _time).
            stamp = fields[layout.time]
            if (
                stamp[:19] == last_second
                and last_base is not None
                and len(stamp) == 24
                and stamp[19:20] == b"."
                and stamp[23:] == b"Z"
                and stamp[20:23].isdigit()
            ):
                when = last_base + int(stamp[20:23]) / 1000.0
            else:
                when = _time(stamp, stamp_of)
                last_second, last_base = stamp[:19], stamp_of(stamp[:19] + b"Z")
            if when is None:
                skipped += 1
                continue
            if first is None:
                first = when
                engine.book.begin_stream(when)
            if when > now:
                after_now += 1
                continue

            # The session: the server of the connector id and the session id.
            session_id = fields[layout.session]
            if not session_id or b" " in session_id:
                skipped += 1
                continue
            connector = fields[layout.connector] if layout.connector is not None else b""
            host = hosts.get(connector)
            if host is None:
                host = hosts[connector] = _host(connector)
            outcome = _event(fields, layout, engine, when, key=host + b" " + session_id,
                             receive=log_type == RECEIVE)  # fmt: skip
            if outcome is PARSED:
                parsed += 1
            elif outcome is IGNORED:
                ignored += 1
            else:
                skipped += 1
    finally:
        stats.lines += lines
        stats.parsed += parsed
        stats.ignored += ignored
        stats.skipped += skipped
        stats.after_now += after_now

    return first


_EVENTS = frozenset((b"+", b"-", b">", b"<", b"*"))
# What became of an event line: it opened, ended or scored a session; it only showed a
# session alive; it was not an event.
PARSED, IGNORED, SKIPPED = "parsed", "ignored", "skipped"


def _header(line: bytes, layout: _Layout, state: dict) -> _Layout:
    """Take in one `#` line; a new `#Fields:` or `#Log-type:` changes the layout."""
    text = line.rstrip(b"\r\n")
    if text.startswith(b"#Fields: "):
        names = tuple(name.strip().decode("latin-1") for name in text[9:].split(b","))
        state.update(fields=list(names), log_type=state.get("log_type", RECEIVE))
    elif text.startswith(b"#Log-type: "):
        state.update(log_type=LOG_TYPES.get(text[11:].strip(), OTHER))
    else:
        return layout
    return _Layout(state)


def _unusable(layout: _Layout) -> str:
    return (
        f"its #Fields: header has no {', '.join(layout.missing)}, and every line needs "
        f"{', '.join(REQUIRED)}; set the protocol log back to Exchange's default fields"
    )


def _log_type_of(fields: list[bytes] | None, layout: _Layout) -> str:
    """The log type of a line read without its file's header (a read that goes on mid-file):
    Receive connectors are named `<server>\\<connector>` in the log, Send connectors are not.
    The last header read is the only other witness, and it may be another file's."""
    if fields is None or layout.connector is None or layout.log_type == OTHER:
        return layout.log_type
    return RECEIVE if b"\\" in fields[layout.connector] else SEND


def _event(fields: list[bytes], layout: _Layout, engine: Engine, when: float, *, key: bytes,
           receive: bool) -> str:  # fmt: skip
    """Feed one event line of session `key`, of a Receive log (`receive`) or a Send log;
    PARSED, IGNORED or SKIPPED."""
    event = fields[layout.event]
    book = engine.book if receive else engine.servers
    if event == b"<" or event == b"*":
        if receive or event == b"*":
            book.evidence(key, when)  # the commonest lines: a session still alive
            return IGNORED
    elif event not in _EVENTS:
        return SKIPPED

    if event == b"+" or event == b"-":
        address = engine.source(endpoint_address(fields[layout.remote]))
        if event == b"+":
            book.connect(key, when, address)
        else:
            book.disconnect(key, when, address)
        return PARSED

    # A reply: the gateway's (`>` in a Receive log) or the server's (`<` in a Send log).
    data = fields[layout.data] if layout.data is not None else b""
    code = _reply_code(data) if event == (b">" if receive else b"<") else 0
    book.evidence(key, when, ending=code == 421)
    if not 400 <= code < 500:
        return IGNORED
    address = engine.source(endpoint_address(fields[layout.remote]))
    if not receive:
        engine.server_reply(address, code)
        return PARSED
    engine.reply(address, code)
    for text, what in REPLY_NOTES:
        if text in data:
            engine.note(address, what)
    return PARSED


def _host(connector: bytes) -> bytes:
    # "EXCH01\Default Frontend EXCH01" -> b"EXCH01"; a Send connector's id names no server.
    server, backslash, _ = connector.partition(b"\\")
    return server if backslash and server and b" " not in server else b""


def _reply_code(data: bytes) -> int:
    # "421 4.3.2 ...", "421-...", or the bare code
    head = data[:4]
    if len(head) >= 3 and head[:3].isdigit() and head[3:4] in (b"", b" ", b"-"):
        return int(head[:3])
    return 0
