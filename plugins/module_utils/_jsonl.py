"""JSON lines: one JSON object a line, whose fields a mapping names (`jsonl_fields`).

Roles and the fields that hold them by default (a role may name one field or a list of
fields, the first one present wins; a dotted name such as `client.ip` goes into nested objects
when no field of that exact name exists; `null` turns a role off):

- time (time, timestamp, @timestamp, ts): ISO 8601 text, or epoch seconds (numbers past
  1e11, 1e14 and 1e17 are milli-, micro- and nanoseconds);
- source (src, source, src_ip, client_ip): the client's address, also as an endpoint
  (`192.0.2.1:25`, `[2001:db8::1]:25`);
- session (session, session_id, sid): what the lines of one session share;
- event (event, action): a value that `jsonl_events` maps to connect, disconnect or ending;
- risk (risk): the source's risk in percent, 0 to 100; any other value (250, -3, "high") is
  counted in `stats.bad_fields` and the source's risk stays unknown;
- destination (server, relay): the internal mail server the gateway passes the session to;
- reply (reply, code): an SMTP reply (`421`, or text that starts with the code);
- host (off, as a field `host` often names the client): the gateway that wrote the line.

A line with a source is a client session at the gateway (`Engine.book`); a line with a
destination is also the gateway's session to that server (`Engine.servers`, same session id),
so that a transparent gateway's relayed session occupies both; a line with only a destination
is a server session alone. A reply counts for the server on a line with a destination, else
for the source. A line that is not JSON, not an object, longer than MAX_LINE, or without a
time or with neither a source nor a destination is skipped and counted.

`jsonl_events` maps the kinds connect, disconnect and ending (a session's end when its
disconnect never comes, such as a timeout) to event values, compared without case; given,
it replaces the defaults (DEFAULT_EVENTS) and must name connect and disconnect.
"""

from __future__ import annotations

import json
import re
from typing import Callable, Iterable

from ansible_collections.campusnet.smtpguard.plugins.module_utils._engine import Engine
from ansible_collections.campusnet.smtpguard.plugins.module_utils._exchange import (
    endpoint_address,
)

NAME = "jsonl"

DEFAULT_FIELDS: dict[str, tuple[str, ...]] = {
    "time": ("time", "timestamp", "@timestamp", "ts"),
    "source": ("src", "source", "src_ip", "client_ip"),
    "session": ("session", "session_id", "sid"),
    "event": ("event", "action"),
    "risk": ("risk",),
    "destination": ("server", "relay"),
    "reply": ("reply", "code"),
    "host": (),
}
ROLES = tuple(DEFAULT_FIELDS)

CONNECT, DISCONNECT, ENDING = "connect", "disconnect", "ending"
DEFAULT_EVENTS: dict[str, tuple[str, ...]] = {
    CONNECT: ("connect", "open", "start"),
    DISCONNECT: ("disconnect", "close", "closed", "end"),
    ENDING: ("timeout", "lost"),
}
KINDS = tuple(DEFAULT_EVENTS)

# How long after an ending event its disconnect is still recognised (see _Feeder), and how
# many such sessions are remembered before the older ones are forgotten.
ENDED_HOLD = 600.0
ENDED_LIMIT = 100_000

# Longer lines are skipped unread: no log line of a session event is this long.
MAX_LINE = 1 << 20

# Epoch numbers above these are milli-, micro- and nanoseconds (1e11 s is the year 5138).
_EPOCH_SCALES = ((1e17, 1e9), (1e14, 1e6), (1e11, 1e3))
_NUMBER = re.compile(r"[0-9]+(?:\.[0-9]+)?\Z")
_MISSING = object()
_BOM = b"\xef\xbb\xbf"

__all__ = ["DEFAULT_EVENTS", "DEFAULT_FIELDS", "NAME", "Mapping", "line_time", "looks_like",
           "read", "validate"]  # fmt: skip


class Mapping:
    """The checked `jsonl_fields` and `jsonl_events`: per role the paths to try, per event
    value (lower case) its kind."""

    def __init__(self, fields: dict[str, tuple[tuple[str, tuple[str, ...]], ...]],
                 events: dict[str, str]) -> None:  # fmt: skip
        self.fields = fields
        self.events = events

    def get(self, record: dict, role: str):
        """The value of `role` in `record`, or _MISSING (also for `null`)."""
        for name, parts in self.fields[role]:
            value = record.get(name, _MISSING)
            if value is _MISSING and parts:
                value = record
                for part in parts:
                    value = value.get(part, _MISSING) if isinstance(value, dict) else _MISSING
                    if value is _MISSING:
                        break
            if value is not _MISSING and value is not None:
                return value
        return _MISSING


def validate(options: dict | None) -> Mapping:
    """The mapping that `options` (`jsonl_fields`, `jsonl_events`) give, on the defaults.

    Raises ValueError naming the option and what to write instead.
    """
    options = options or {}
    return Mapping(_fields(options.get("jsonl_fields")), _events(options.get("jsonl_events")))


def _fields(given) -> dict[str, tuple[tuple[str, tuple[str, ...]], ...]]:
    if given is not None and not isinstance(given, dict):
        raise ValueError(f"jsonl_fields must be a dictionary of role: field, not {given!r}")
    names: dict[str, tuple[str, ...]] = dict(DEFAULT_FIELDS)
    for role, value in (given or {}).items():
        if role not in DEFAULT_FIELDS:
            raise ValueError(f"jsonl_fields: {role!r} is not a role; use {', '.join(ROLES)}")
        if value is None or value == "" or value == []:
            names[role] = ()
            continue
        paths = [value] if isinstance(value, str) else value
        if not isinstance(paths, list) or not all(
            isinstance(path, str) and path and "" not in path.split(".") for path in paths
        ):
            raise ValueError(
                f"jsonl_fields: {role} must be a field name (dotted for nested objects, such "
                f"as client.ip) or a list of them, not {value!r}"
            )
        names[role] = tuple(paths)
    if not names["time"]:
        raise ValueError("jsonl_fields: time cannot be turned off; every line needs its time")
    if not names["source"] and not names["destination"]:
        raise ValueError("jsonl_fields: source and destination cannot both be turned off")
    return {
        role: tuple((path, tuple(path.split(".")) if "." in path else ()) for path in paths)
        for role, paths in names.items()
    }


def _events(given) -> dict[str, str]:
    if given is None:
        given = {kind: list(values) for kind, values in DEFAULT_EVENTS.items()}
    if not isinstance(given, dict):
        raise ValueError(f"jsonl_events must be a dictionary of kind: [values], not {given!r}")
    kinds: dict[str, str] = {}
    for kind, values in given.items():
        if kind not in DEFAULT_EVENTS:
            raise ValueError(f"jsonl_events: {kind!r} is not a kind; use {', '.join(KINDS)}")
        values = [values] if isinstance(values, (str, int)) else values
        if not isinstance(values, list) or not all(
            isinstance(value, (str, int)) and not isinstance(value, bool) and str(value)
            for value in values
        ):
            raise ValueError(
                f"jsonl_events: {kind} must be an event value or a list of them, not {values!r}"
            )
        for value in values:
            text = str(value).lower()
            if kinds.get(text, kind) != kind:
                raise ValueError(
                    f"jsonl_events: the value {value!r} is under both {kinds[text]} and {kind}; "
                    "give each value one kind"
                )
            kinds[text] = kind
    for needed in (CONNECT, DISCONNECT):
        if needed not in kinds.values():
            raise ValueError(
                f"jsonl_events: no value opens or ends a session as {needed}; give "
                f"{needed}: [...] (the defaults are {dict(DEFAULT_EVENTS)})"
            )
    return kinds


_DEFAULT = validate(None)


def looks_like(lines: list[bytes]) -> bool:
    """Whether the first non-empty lines of a file (up to five) are JSON objects."""
    seen = 0
    for line in lines:
        text = line.strip()
        if seen == 0 and text.startswith(_BOM):
            text = text[3:]
        if not text:
            continue
        if _record(text) is None:
            return False
        seen += 1
        if seen == 5:
            break
    return seen > 0


def line_time(line: bytes, stamp_of: Callable[[bytes], float | None], *,
              options: dict | None = None) -> float | None:  # fmt: skip
    """The time of one line, or None. Without `options` the default time fields are used."""
    mapping = _DEFAULT if options is None else validate(options)
    text = line.strip()
    record = _record(text[3:] if text.startswith(_BOM) else text)
    return None if record is None else _time(mapping.get(record, "time"), stamp_of)


def read(handle: Iterable[bytes], *, engine: Engine, stamp_of: Callable[[bytes], float | None],
         first: float | None = None) -> float | None:  # fmt: skip
    """The format's entry point (see `_engine`): feed one file's sessions to `engine`."""
    engine.book.keys_recur = False  # a session id names one connection
    feeder = _Feeder(validate(engine.options), engine)
    stats = engine.stats
    now = engine.book.now
    lines = parsed = ignored = skipped = after_now = 0

    try:
        for line in handle:
            lines += 1
            text = line.strip()
            if lines == 1 and text.startswith(_BOM):
                text = text[3:]
            if not text:
                ignored += 1
                continue
            record = _record(text)
            if record is None:
                skipped += 1
                continue

            when = _time(feeder.mapping.get(record, "time"), stamp_of)
            if when is None:
                skipped += 1
                continue
            if first is None:
                first = when
                engine.book.begin_stream(when)
            if when > now:
                after_now += 1
                continue

            outcome = feeder.feed(record, when)
            if outcome is PARSED:
                parsed += 1
            elif outcome is IGNORED:
                ignored += 1
            else:
                skipped += 1
    finally:
        feeder.keep()
        stats.lines += lines
        stats.parsed += parsed
        stats.ignored += ignored
        stats.skipped += skipped
        stats.after_now += after_now

    return first


PARSED, IGNORED, SKIPPED = "parsed", "ignored", "skipped"


def _record(text: bytes) -> dict | None:
    """The object on one line, or None when the line is not one (or too long or too deep)."""
    if len(text) > MAX_LINE or text[:1] != b"{":
        return None
    try:
        record = json.loads(text.decode("utf-8", "replace"))
    except (ValueError, RecursionError):
        return None
    return record if isinstance(record, dict) else None


def _time(value, stamp_of: Callable[[bytes], float | None]) -> float | None:
    if isinstance(value, str):
        if _NUMBER.match(value):
            return _epoch(float(value))
        try:
            return stamp_of(value.encode("ascii"))
        except UnicodeEncodeError:
            return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return _epoch(float(value))
    return None


def _epoch(seconds: float) -> float | None:
    for limit, scale in _EPOCH_SCALES:
        if seconds >= limit:
            seconds /= scale
            break
    # inf and nan fail the comparison; 1971 to 9998 as for `now`
    return seconds if 31536000.0 <= seconds <= 253370764800.0 else None


class _Feeder:
    """Feeds the lines of one read to the engine.

    An ending event (a timeout, say) ends its session where it stands, as its disconnect may
    never come; when the disconnect does come, `ended` recognises it, so that it does not
    count as a second session whose connect lay before the log. `ended` is kept in
    `format_state` (for ENDED_HOLD seconds) so that a run going on from `state_path` knows it.
    """

    def __init__(self, mapping: Mapping, engine: Engine) -> None:
        self.mapping = mapping
        self.engine = engine
        self.state = engine.format_state.setdefault(NAME, {})
        self.ended = {
            key.encode("latin-1"): when for key, when in self.state.get("ended", {}).items()
        }
        self.newest = 0.0

    def feed(self, record: dict, when: float) -> str:
        """Feed one line's session event, risk and reply; PARSED, IGNORED or SKIPPED."""
        mapping, engine = self.mapping, self.engine
        source = mapping.get(record, "source")
        destination = mapping.get(record, "destination")
        if source is _MISSING and destination is _MISSING:
            return SKIPPED
        client = _address(source, engine) if source is not _MISSING else None
        server = _address(destination, engine) if destination is not _MISSING else None
        event = mapping.get(record, "event")
        kind = mapping.events.get(str(event).lower()) if isinstance(event, (str, int)) else None
        scored = False

        value = mapping.get(record, "risk")
        risk = _risk(value) if value is not _MISSING else None
        if value is not _MISSING and risk is None:
            engine.stats.bad_fields += 1  # the source's risk stays unknown
        if risk is not None and client is not None:
            engine.risk(client, risk)
            scored = True
        code = _reply_code(mapping.get(record, "reply"))
        if 400 <= code < 500:
            if destination is not _MISSING:
                engine.server_reply(server, code)
            else:
                engine.reply(client, code)
            scored = True

        session = mapping.get(record, "session")
        if not isinstance(session, (str, int)) or isinstance(session, bool) or session == "":
            # Without a session id nothing can be paired: an event is lost, a score is not.
            return SKIPPED if kind is not None else (PARSED if scored else IGNORED)
        key = _host(mapping.get(record, "host")) + b" " + str(session).encode("utf-8", "replace")
        if when > self.newest:
            self.newest = when
        if source is not _MISSING:
            self._session(engine.book, b"c", key, when, client, kind)
        if destination is not _MISSING:
            self._session(engine.servers, b"s", key, when, server, kind)
        return PARSED if kind is not None or scored else IGNORED

    def _session(self, book, side: bytes, key: bytes, when: float, address: str | None,
                 kind: str | None) -> None:  # fmt: skip
        if kind == CONNECT:
            self.ended.pop(side + key, None)
            book.connect(key, when, address)
        elif kind == DISCONNECT:
            if key not in book.open_sessions and self.ended.pop(side + key, None) is not None:
                return  # the disconnect after an ending event: the session is already over
            book.disconnect(key, when, address)
        elif kind == ENDING:
            if key in book.open_sessions or side + key not in self.ended:
                book.disconnect(key, when, address)
                self.ended[side + key] = when
                if len(self.ended) > ENDED_LIMIT:
                    self._forget()
        else:
            book.evidence(key, when)

    def keep(self) -> None:
        """Put what the next file or run needs into `format_state`."""
        self._forget()
        self.state["ended"] = {key.decode("latin-1"): when for key, when in self.ended.items()}

    def _forget(self) -> None:
        oldest = self.newest - ENDED_HOLD
        self.ended = {key: when for key, when in self.ended.items() if when >= oldest}


def _address(value, engine: Engine) -> str | None:
    """The canonical address of a source or destination value (through `Engine.source`)."""
    raw = value.encode("utf-8", "replace") if isinstance(value, str) else repr(value).encode()
    return engine.source(endpoint_address(raw.strip()))


def _host(value) -> bytes:
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        return b""
    # A space would end the host part of the key (see `_sessions.host_of`).
    return str(value).replace(" ", "_").encode("utf-8", "replace")


def _risk(value) -> float | None:
    """A risk in percent, 0 to 100 (a number or its text), or None for anything else."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str) and _NUMBER.match(value.strip()):
        number = float(value)
    else:
        return None
    return number if 0.0 <= number <= 100.0 else None  # nan fails the comparison too


def _reply_code(value) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        head = value.lstrip()[:4]
        if head[:3].isdigit() and head[3:4] in ("", " ", "-"):
            return int(head[:3])
    return 0
