"""Cisco Secure Email Gateway (ESA, formerly IronPort) text mail logs: `mail_logs`.

Two line prefixes, both read:
- the appliance's own file: `Wed Jun 16 21:42:34 2004 Info: <message>` (ctime stamp with the
  year, no host);
- a syslog push: `<166>Mar  4 14:21:04 mail_logs: Info: <message>`, with or without a host
  after the stamp (the host keeps several appliances apart in one file), and with a syslog or
  RFC 3339 stamp when a relay rewrote the header. `message repeated N times` folds are expanded.

A client session is an injection connection (ICID): it opens with `New SMTP ICID N interface
<name> (<ip>) address <client>` and ends with `ICID N close`, or at `ICID N lost` (the
connection broke off; the close that usually follows ends nothing more). Sessions are keyed
`b"<host> <icid>"`; lines without a host (the appliance's own file) take `Engine.origin`, so
that two appliances' files never share an ICID. The host access table's policy line (`ICID N
ACCEPT SG ... SBRS 3.5`) gives the SenderBase reputation score: SBRS from -10.0 (a spammer) to
10.0 is the log's risk, (10 - SBRS) x 5 percent; `None` (no score), `rfc1918` (an internal
sender) and `not enabled` give none, and any other score (out of range, unreadable) is counted
in `stats.bad_fields` and gives none. REJECT (also `Delayed HAT REJECT`) and TCPREFUSE policies
are noted as `rejected`; TCPREFUSE also ends the session.

A delivery connection (DCID) is the gateway's own session to a mail server: `New SMTP DCID D
interface <ip> address <server> port 25` to `DCID D close`, keyed `b"<host> dcid<D>"` in
`Engine.servers`. A `Delayed: DCID D ...` line is a temporary failure that server answered
the gateway with, counted per server; it is not what the gateway answered the client that
sent the message, so it is never counted for a source.

Only the address the appliance wrote after `address` becomes a source or a server; the
reverse DNS name, envelope addresses and subjects (text a client or its DNS chose) are never
read for addresses, and lines are matched at the start of the message only.

Shapes follow AsyncOS's "Interpreting a Text Mail Log" samples in the ESA user guides, Cisco
TAC notes 118232 (ICID, MID, DCID), 118570 (`ICID 450 ACCEPT SG None match ALL SBRS None`),
212837 (`New SMTP DCID 7436 interface 10.10.1.12 address 10.10.1.25 port 25`) and the
AsyncOS 14.2 connection-limit note on community.cisco.com (`ICID 16399 Receiving Failed:
Connection limit exceeded`), and Splunk's ESA samples (`Delayed: DCID 8414309 MID 19410908
From: <...> To: <...> RID 0 - 4.3.2 - Not accepting messages at this time ('421', [...])`).
"""

from __future__ import annotations

import math
import re
from itertools import chain
from typing import Callable, Iterable, Iterator

from ansible_collections.campusnet.smtpguard.plugins.module_utils._engine import (
    Engine,
    first_time,
)
from ansible_collections.campusnet.smtpguard.plugins.module_utils._sessions import SessionBook
from ansible_collections.campusnet.smtpguard.plugins.module_utils._syslog import (
    HOST,
    expand_repeats,
)

NAME = "cisco_esa"

__all__ = ["NAME", "line_time", "looks_like", "read", "sbrs_risk"]

# What a handler made of a line, for the counters.
PARSED, IGNORED, SKIPPED = 0, 1, 2

# The prefix of a line: a ctime stamp (the appliance's file), or an optional <PRI>, a syslog
# or RFC 3339 stamp, an optional host and the log subscription's name (a syslog push); then
# the level. Groups: ctime stamp, syslog stamp, host.
_HEAD = re.compile(
    rb"(?:([A-Z][a-z][a-z] [A-Z][a-z][a-z] [ 0-9][0-9] [0-9][0-9]:[0-9][0-9]:[0-9][0-9]"
    rb" [0-9]{4})"
    rb"|(?:<[0-9]{1,3}>)?([A-Z][a-z][a-z] [ 0-9][0-9] [0-9][0-9]:[0-9][0-9]:[0-9][0-9]"
    rb"|[0-9]{4}-[0-9][0-9]-[0-9][0-9]T[^ ]+)"
    rb" (?:(" + HOST + rb") )?[^ \[\]:]+(?:\[[0-9]+\])?:)"
    rb" (?:Info|Warning|Debug|Trace|Critical): "
)

# Any line of interest names an ICID or a DCID; everything else is rejected unsplit.
_MARK = b"CID"

# First bytes of a plausible line: a weekday or month name, a <PRI>, an RFC 3339 digit.
_PLAUSIBLE_FIRST = frozenset(b"<ADFJMNOSTW0123456789")

# Host access table actions that a policy line starts with.
_POLICIES = frozenset((b"ACCEPT", b"REJECT", b"TCPREFUSE", b"RELAY", b"CONTINUE"))
_REFUSING = frozenset((b"REJECT", b"TCPREFUSE"))
# A REJECT policy that lets the session go on to log its recipients, and refuses them then.
_DELAYED_REJECT = b"Delayed HAT REJECT"

# What the gateway itself answered a client, by the ICID line's text after "ICID N ":
# (prefix, SMTP code the appliance sends for it by default, note).
GATEWAY_ANSWERS: tuple[tuple[bytes, int, str | None], ...] = (
    (b"Receiving Failed: Connection limit exceeded", 421, "connection_limit"),
)
# ... and by the end of a `MID M ICID N ... To: <...> <verdict>` line: the recipient rate
# limit of a mail flow policy ("452 Too many recipients received this hour" by default).
RECIPIENT_ANSWERS: tuple[tuple[bytes, int], ...] = ((b"Rejected by Receiving Control", 452),)

# The reply of a server in a `Delayed:` line: "... - 4.3.2 - <reason> ('421', [...])".
_SERVER_REPLY = re.compile(rb" - [0-9]\.[0-9]{1,3}\.[0-9]{1,3} - [^(]*\('([0-9]{3})'")

# Where a SessionBook keeps the source in an open session's record.
_SESSION_SOURCE = 1

# Sessions that ended before their close (a TCPREFUSE policy, a lost connection), in
# Engine.format_state (keys as latin-1 text), so that a close that may still come for them is
# not read as a session of its own; the oldest are forgotten beyond MAX_ENDED. The state's
# name is the one it had when only TCPREFUSE ended sessions early.
ENDED = "cisco_esa_refused"
MAX_ENDED = 10_000
# SBRS values that say "no score" rather than a bad one.
_NO_SCORE = frozenset((b"None", b"none", b"rfc1918", b"not"))


# Messages that only an ESA mail log starts with.
_LOOKS = (
    b"New SMTP ICID ",
    b"New SMTP DCID ",
    b"ICID ",
    b"Start MID ",
    b"MID ",
    b"DCID ",
    b"Delivery start DCID ",
    b"Begin Logfile",
    b"Logfile rolled over",
)


# Messages (MID) whose source is remembered, for a server's 4xx to them.
MESSAGE_LIMIT = 20_000

def looks_like(lines: list[bytes]) -> bool:
    """Whether the first lines of a file are an ESA text mail log."""
    for line in lines:
        head = _HEAD.match(line)
        if head is not None and line[head.end() :].startswith(_LOOKS):
            return True
    return False


def line_time(line: bytes, stamp_of: Callable[[bytes], float | None]) -> float | None:
    """The time of one line, or None."""
    head = _HEAD.match(line)
    return stamp_of(head.group(1) or head.group(2)) if head is not None else None


def sbrs_risk(score: bytes) -> float | None:
    """The risk in percent of a SenderBase reputation score as the log writes it, or None for
    `None`, `rfc1918`, `not` (enabled) and anything outside -10.0 to 10.0."""
    try:
        value = float(score)
    except ValueError:
        return None
    if not (math.isfinite(value) and -10.0 <= value <= 10.0):
        return None
    return (10.0 - value) * 5.0


def read(handle: Iterable[bytes], *, engine: Engine, stamp_of: Callable[[bytes], float | None],
         first: float | None = None) -> float | None:  # fmt: skip
    """The format's entry point (see `_engine`): feed every line of `handle` to `engine`."""
    book = engine.book
    book.keys_recur = False  # an ICID names one connection
    now = book.now
    head = _HEAD.match
    plausible = _PLAUSIBLE_FIRST
    shapes = _BY_FIRST_WORD
    origin = engine.origin  # the host of lines that name none (the appliance's own file)
    # Most lines carry the prefix (stamp, host, level) of the line before: it is split once.
    last_prefix, last_when, host = b"\0", None, b""
    counts = [0, 0, 0]  # PARSED, IGNORED, SKIPPED
    lines = after_now = 0

    try:
        for line in _unfolded(handle):
            lines += 1
            if _MARK not in line:
                if first is None:
                    first = first_time(line, book=book, line_time=line_time, stamp_of=stamp_of)
                if line and line[0] in plausible and b": " in line:
                    counts[IGNORED] += 1
                else:
                    counts[SKIPPED] += 1
                continue

            # Split: prefix (time, host), message.
            if line.startswith(last_prefix):
                end = len(last_prefix)
            else:
                found = head(line)
                if found is None:
                    counts[SKIPPED] += 1
                    continue
                end = found.end()
                stamp, syslog_stamp, host = found.groups()
                last_prefix, last_when = line[:end], stamp_of(stamp or syslog_stamp)
                host = host or origin
            when = last_when
            if when is None:
                counts[SKIPPED] += 1
                continue
            if first is None:
                first = when
                book.begin_stream(when)
            if when > now:
                after_now += 1
                continue

            # Classify by the start of the message, and feed the engine.
            message = line[end:].rstrip(b"\r\n")
            outcome = IGNORED
            for prefix, handler in shapes.get(message[:4], ()):
                if message.startswith(prefix):
                    outcome = handler(engine, host, message[len(prefix) :], when)
                    break
            counts[outcome] += 1
    finally:
        stats = engine.stats
        stats.lines += lines
        stats.parsed += counts[PARSED]
        stats.ignored += counts[IGNORED]
        stats.skipped += counts[SKIPPED]
        stats.after_now += after_now

    return first


def _unfolded(handle: Iterable[bytes]) -> Iterator[bytes]:
    """The lines of `handle`, with a syslog server's `message repeated` folds expanded unless
    the file is the appliance's own (decided by its first line), which has none."""
    lines = iter(handle)
    for line in lines:
        found = _HEAD.match(line)
        if found is not None and found.group(1) is not None:
            return chain((line,), lines)
        return expand_repeats(chain((line,), lines))
    return iter(())


def _new_icid(engine: Engine, host: bytes, rest: bytes, when: float) -> int:
    # "3160 interface Data 1 (198.51.100.10) address 192.0.2.70 reverse dns host unknown
    # verified no"; before AsyncOS 3.8: "10292815 interface private address 192.0.2.69".
    icid, _, tail = rest.partition(b" ")
    if not icid.isdigit() or not tail.startswith(b"interface "):
        return SKIPPED
    raw = _client_address(tail)
    if raw is None:
        return SKIPPED
    key = host + b" " + icid
    ended = engine.format_state.get(ENDED)
    if ended:
        ended.pop(key.decode("latin-1"), None)  # the ICID counts again from here
    engine.book.connect(key, when, engine.source(raw))
    return PARSED


def _client_address(tail: bytes) -> bytes | None:
    """The client address of a `New SMTP ICID` line's `interface ...` part, as written."""
    # The interface name may hold spaces and the word "address"; its own address in
    # parentheses ends it. The reverse DNS name after the client address is what the client's
    # DNS chose: nothing at or after " reverse dns host " is searched.
    names = tail.find(b" reverse dns host ")
    limit = names if names >= 0 else len(tail)
    parenthesis = tail.find(b") address ", 0, limit)
    if parenthesis >= 0:
        start = parenthesis + 10
        if names < 0:
            return None  # cut short: the address may be cut too
        return tail[start:names] or None
    at = tail.find(b" address ", 0, limit)
    if at < 0:
        return None
    start = at + 9
    end = tail.find(b" ", start, limit)
    return tail[start : end if end >= 0 else limit] or None


def _icid(engine: Engine, host: bytes, rest: bytes, when: float) -> int:
    # "3160 close", "3160 lost", "3160 ACCEPT SG ... SBRS 3.5", "3160 SBRS None",
    # "3160 Receiving Failed: ...", "3160 TLS success ..."
    icid, _, what = rest.partition(b" ")
    if not icid.isdigit():
        return SKIPPED
    book = engine.book
    key = host + b" " + icid
    if what == b"close":
        ended = engine.format_state.get(ENDED)
        if ended and ended.pop(key.decode("latin-1"), None) is not None:
            return PARSED  # a policy line or a lost connection already ended it
        book.disconnect(key, when, None)
        return PARSED
    if what == b"lost":
        if key in book.open_sessions:
            _end_early(engine, key, when)
        return PARSED

    action = what.partition(b" ")[0]
    if action in _POLICIES or action == b"SBRS":
        source = _source(book, key)
        score = _sbrs_field(what)
        risk = sbrs_risk(score) if score is not None else None
        if risk is not None:
            engine.risk(source, risk)
        elif score is not None and score not in _NO_SCORE:
            engine.stats.bad_fields += 1
        if action in _REFUSING:
            engine.note(source, "rejected")
        if action == b"TCPREFUSE" and key in book.open_sessions:
            _end_early(engine, key, when)
        else:
            book.evidence(key, when)
        return PARSED

    if what.startswith(_DELAYED_REJECT):
        engine.note(_source(book, key), "rejected")
        book.evidence(key, when)
        return PARSED
    for prefix, code, note in GATEWAY_ANSWERS:
        if what.startswith(prefix):
            source = _source(book, key)
            engine.reply(source, code)
            if note is not None:
                engine.note(source, note)
            book.evidence(key, when)
            return PARSED
    book.evidence(key, when)
    return IGNORED


def _end_early(engine: Engine, key: bytes, when: float) -> None:
    """End the session `key` here (TCPREFUSE refused it, or it was lost), whether or not a
    close follows."""
    engine.book.disconnect(key, when, None)
    ended = engine.format_state.setdefault(ENDED, {})
    ended[key.decode("latin-1")] = when
    if len(ended) > MAX_ENDED:
        del ended[next(iter(ended))]


def _sbrs_field(what: bytes) -> bytes | None:
    """The score after " SBRS " (or at the start) of a policy line, as written."""
    if what.startswith(b"SBRS "):
        start = 5
    else:
        at = what.find(b" SBRS ")
        if at < 0:
            return None
        start = at + 6
    return what[start:].partition(b" ")[0]


def _source(book: SessionBook, key: bytes) -> str | None:
    """The source of the open session `key`, or None when it is not open (its `New SMTP`
    line lies before the first line read, or it was never logged)."""
    session = book.open_sessions.get(key)
    return session[_SESSION_SOURCE] if session is not None else None


def _start_mid(engine: Engine, host: bytes, rest: bytes, when: float) -> int:
    # "200257070 ICID 282204970": a message begins in the session. Its source is kept by MID,
    # so that a server's 4xx to the message (Delayed: DCID D MID M ...) counts for it.
    mid, _, tail = rest.partition(b" ")
    if tail.startswith(b"ICID ") and tail[5:].isdigit():
        key = host + b" " + tail[5:]
        engine.book.evidence(key, when)
        source = _source(engine.book, key)
        if source is not None and mid.isdigit():
            messages = engine.format_state.setdefault("cisco_esa_mids", {})
            if len(messages) >= MESSAGE_LIMIT:
                messages = engine.format_state["cisco_esa_mids"] = dict(
                    list(messages.items())[MESSAGE_LIMIT // 2 :]
                )
            messages[(host + b" " + mid).decode("latin-1")] = source
    return IGNORED


def _mid(engine: Engine, host: bytes, rest: bytes, when: float) -> int:
    # "200257070 ICID 282204970 RID 0 To: <user@example.com> Rejected by Receiving Control";
    # other MID lines (Subject, Message-ID, antivirus, ...) carry no ICID right after the MID.
    mid, _, tail = rest.partition(b" ")
    if not mid.isdigit() or not tail.startswith(b"ICID "):
        return IGNORED
    icid, _, what = tail[5:].partition(b" ")
    if not icid.isdigit():
        return SKIPPED
    key = host + b" " + icid
    engine.book.evidence(key, when)
    for verdict, code in RECIPIENT_ANSWERS:
        if what.endswith(verdict):
            engine.reply(_source(engine.book, key), code)
            return PARSED
    return IGNORED


def _new_dcid(engine: Engine, host: bytes, rest: bytes, when: float) -> int:
    # "7436 interface 10.10.1.12 address 10.10.1.25 port 25" (no port before AsyncOS 4.6)
    dcid, _, tail = rest.partition(b" ")
    at = tail.find(b" address ")
    if not dcid.isdigit() or not tail.startswith(b"interface ") or at < 0:
        return SKIPPED
    raw = tail[at + 9 :].partition(b" ")[0]
    if not raw:
        return SKIPPED
    engine.servers.connect(host + b" dcid" + dcid, when, engine.source(raw))
    return PARSED


def _dcid(engine: Engine, host: bytes, rest: bytes, when: float) -> int:
    # "7436 close", "7436 TLS success ..."
    dcid, _, what = rest.partition(b" ")
    if not dcid.isdigit():
        return SKIPPED
    key = host + b" dcid" + dcid
    if what == b"close":
        engine.servers.disconnect(key, when, None)
        return PARSED
    engine.servers.evidence(key, when)
    return IGNORED


def _dcid_alive(engine: Engine, host: bytes, rest: bytes, when: float) -> int:
    # "7436 MID 64855 to RID [0]" after "Delivery start DCID " or "Message done DCID "
    dcid = rest.partition(b" ")[0]
    if not dcid.isdigit():
        return SKIPPED
    engine.servers.evidence(host + b" dcid" + dcid, when)
    return IGNORED


def _delayed(engine: Engine, host: bytes, rest: bytes, when: float) -> int:
    # "8414309 MID 19410908 From: <a> To: <b> RID 0 - 4.3.2 - Not accepting messages at this
    # time ('421', ['4.3.2 try again later'])"; before AsyncOS 4: "4370 Message 10800 to 0 -
    # 4.4.0 - Other network problem ('000', [...])" after "Delayed: DCID: ".
    dcid, _, tail = rest.lstrip(b": ").partition(b" ")
    if not dcid.isdigit():
        return SKIPPED
    key = host + b" dcid" + dcid
    servers = engine.servers
    servers.evidence(key, when)
    reply = _SERVER_REPLY.search(tail)
    if reply is None:
        return IGNORED
    code = int(reply.group(1))
    engine.server_reply(_source(servers, key), code)
    if 400 <= code < 500 and tail.startswith(b"MID "):
        mid = tail[4:].partition(b" ")[0]
        source = engine.format_state.get("cisco_esa_mids", {}).get(
            (host + b" " + mid).decode("latin-1")
        )
        engine.note(source, "server_421" if code == 421 else "server_tempfail")
    return PARSED


# Message prefixes (after the level) and what reads them; no prefix begins another, so the
# order is that of how often each shape comes.
SHAPES: tuple[tuple[bytes, Callable[[Engine, bytes, bytes, float], int]], ...] = (
    (b"ICID ", _icid),
    (b"MID ", _mid),
    (b"New SMTP ICID ", _new_icid),
    (b"Start MID ", _start_mid),
    (b"New SMTP DCID ", _new_dcid),
    (b"DCID ", _dcid),
    (b"Delivery start DCID ", _dcid_alive),
    (b"Message done DCID ", _dcid_alive),
    (b"Delayed: DCID", _delayed),
)
# The shapes by the first four bytes of their prefix: one look-up instead of nine tests.
_BY_FIRST_WORD: dict[bytes, tuple[tuple[bytes, Callable], ...]] = {
    first: tuple(shape for shape in SHAPES if shape[0][:4] == first)
    for first in {prefix[:4] for prefix, _ in SHAPES}
}
