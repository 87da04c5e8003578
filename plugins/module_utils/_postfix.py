"""Postfix logs: the line shapes that open, end and score SMTP sessions.

The reader works on bytes. A cheap substring test rejects lines of other programs before
anything is split (every smtpd line counts: besides its events, it shows when its session was
last alive), each distinct timestamp string is parsed once, and a session is keyed by
host + program + pid, so that several gateways, instances (`postfix-out/smtpd`) and services
(`postfix/submission/smtpd`) in one file stay apart.
Only the peer address that Postfix itself wrote in `name[address]` after `connect from`
ever becomes a source; text a client sent (HELO, commands) is never read.

The hot loop takes the common line shape (host and message included) and an smtpd event apart
with one match each, and skips `ipaddress` for addresses already in canonical IPv4 form;
`split_line`, `strip_queue_id` and `peer_address` are the readable forms of those matches, and
test_fast_paths holds each shortcut to them. benchmarks/RESULTS.md has the profile that called
for them.
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
# postscreen shapes: a session from CONNECT to DISCONNECT (or HANGUP, or COMMAND TIME LIMIT),
# or to smtpd's connect after a PASS; the risk of a DNSBL rank; notes. Older Postfix says
# WHITELISTED and BLACKLISTED.
POSTSCREEN_SHAPES: tuple[tuple[bytes, str], ...] = (
    (b"CONNECT from ", CONNECT),
    (b"DNSBL rank ", RANK),
    (b"PASS NEW ", "pass"),
    (b"PASS OLD ", "pass"),
    (b"DISCONNECT ", DISCONNECT),
    (b"HANGUP after ", ENDING),
    (b"COMMAND TIME LIMIT ", ENDING),
    (b"PREGREET ", "pregreet"),
    (b"ALLOWLISTED ", "allowlisted"),
    (b"WHITELISTED ", "allowlisted"),
    (b"DENYLISTED ", "denylisted"),
    (b"BLACKLISTED ", "denylisted"),
)
_POSTSCREEN_KINDS = {prefix.rstrip(): kind for prefix, kind in POSTSCREEN_SHAPES}
_POSTSCREEN_PREFIXES = tuple(prefix for prefix, _ in POSTSCREEN_SHAPES)
# A postscreen shape (group 1) and its client's "[address]:port" (groups 2 and 3) in one match.
_POSTSCREEN_EVENT = re.compile(
    rb"(" + b"|".join(re.escape(prefix.rstrip()) for prefix, _ in POSTSCREEN_SHAPES) + rb")"
    rb" [^\[]*\[([^\]]*)\]:([0-9]+)"
)
# postscreen sessions are parked in the book keyed by host + this + "[address]:port": still in
# postscreen's tests, or passed to smtpd and waiting for its connect.
_POSTSCREEN_KEY = b" postscreen "
_PASSED_KEY = b" postscreen-passed "

# Substrings that any line of interest contains; everything else is rejected unsplit. Every
# smtpd line is of interest: besides its events it shows that its session was still alive.
_MARK_SMTPD = b"smtpd["
_MARK_POSTSCREEN = b"postscreen["
_MARK_SMTP = b"/smtp["  # the SMTP client: deliveries to internal servers
_LAST_REPEATED = b"last message repeated "
# A fold of more than this many lines is taken as this many: a corrupt count must not stall.
MAX_REPEATS = 10_000
# Queue ids remembered to name the client of a deferred message.
QUEUE_LIMIT = 20_000

# "from name[192.0.2.1]: 450 4.7.25" or "from [192.0.2.1]:52342: 450"; the code is group 2.
_REJECT = re.compile(rb"reject: [A-Z]+ from [^\[]*\[([^\]]*)\](?::[0-9]+)?: ([2-5][0-9][0-9])[ ,]")
# "delays=a/b/c/d": c (connection set-up) and d (transmission) are the session to the server.
_DELAYS = re.compile(rb" delays=[0-9.]+/[0-9.]+/([0-9.]+)/([0-9.]+)")
# "(host name[10.0.0.5] said: 421 ..." or "refused to talk to me: 421 ..."
_SAID = re.compile(rb"(?:said|talk to me): ([2-5][0-9][0-9])[ -]")
_REPEATED = re.compile(rb"(.*?: )message repeated ([0-9]{1,12}) times: \[ ?(.*?)\][ \r\n]*\Z", re.S)
# How Postfix tags an IPv6 peer in some messages: [IPv6:2001:db8::25].
_IPV6_TAGS = (b"IPv6:", b"ipv6:")

# "NOQUEUE", a short queue id (upper-case hex) or a long one (a base-52 alphabet without
# vowels). A severity such as "warning" or "fatal" is not a queue id: what follows it may
# quote a client.
_QUEUE_ID = re.compile(rb"NOQUEUE|[0-9A-F]{6,20}|[0-9B-DF-HJ-NP-TV-Zb-df-hj-np-tv-z]{10,24}")
# A reject and an anvil limit as smtpd and postscreen write them: from the message's start, so
# that the same words in a client's text smtpd quotes (a non-SMTP command) count for nobody.
_REJECT_LINE = re.compile(rb"(?:" + _QUEUE_ID.pattern + rb"): (?:milter-)?" + _REJECT.pattern)
_LIMIT = re.compile(rb"warning: [A-Za-z ]{1,60} limit exceeded: [0-9]+ from ")
# A delivery's own fields up to its relay= value: "<queue id>: to=<...>[, orig_to=<...>],
# relay=". An address is taken whole, "..." and \x inside it included, so that a relay=,
# delays= or said: a client put in a recipient is never read.
_ADDRESS = rb'<(?:[^"\\>]|\\.|"(?:[^"\\]|\\.)*")*>'
_DELIVERY = re.compile(
    rb"(?:" + _QUEUE_ID.pattern + rb"): to=" + _ADDRESS + rb"(?:, orig_to=" + _ADDRESS + rb")?"
    rb", relay=",
    re.S,
)

# First bytes of a plausible log line: a month name (syslog, maillog_file) or a digit
# (RFC 3339). Anything else is junk and counts as skipped.
_PLAUSIBLE_FIRST = frozenset(b"JFMASOND0123456789")

_DIGITS = frozenset(b"0123456789")

# The shape of nearly every line, "<stamp> <host> <program>[<pid>]: <message>", with a syslog
# or maillog_file stamp (15 bytes) or an RFC 3339 one. Where it matches, its groups are the
# stamp, the session key, the host, the program and the message without its line end: what
# split_line would return, and the host that starts the key (test_fast_paths pins that);
# other lines go through split_line. The message group is None where nothing but line-end
# bytes follow ": ", so the loop asks for groups(b"") (rstrip(b"\r\n") leaves b"" there).
_COMMON_LINE = re.compile(
    rb"([A-Z][a-z][a-z] [ 0-9][0-9] [0-9][0-9]:[0-9][0-9]:[0-9][0-9]|[0-9][^ ]*)"
    rb" (([^ \[\]]+) ([^ \[\]]+)\[[0-9]+)\]: "
    rb"(.*[^\r\n])?[\r\n]*\Z",
    re.S,
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
                        ranks=engine.ranks, addresses=engine.addresses, first=first,
                        engine=engine)  # fmt: skip


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


def read_postfix(
    handle: Iterable[bytes],
    *,
    book: SessionBook,
    stamp_of: Callable[[bytes], float | None],
    stats: Stats,
    ranks: dict[str, int],
    addresses: dict[bytes, str | None],
    first: float | None = None,
    engine: Engine | None = None,
    _extras: _Extras | None = None,
) -> float | None:
    """Feed the session events of one file to `book`; returns the first timestamp read.

    `ranks` collects the highest postscreen DNSBL rank per source; `addresses` caches the
    normalised form of each address text (None for `unknown` and for anything that is not
    an address). `first` is the file's first time when reading goes on where an earlier run
    stopped. `stats` is complete even when reading stops early (a truncated gzip). `engine`
    takes what goes beyond sessions and ranks (temporary failures, notes, the gateway's
    sessions to internal servers); without one they are dropped.
    """
    if engine is None:
        engine = Engine(book)
    extras = _extras if _extras is not None else _Extras(engine, book, addresses, stats, ranks)
    # Deliveries are read only when internal servers are to be reported.
    servers = engine.track_servers
    now = book.now
    plausible = _PLAUSIBLE_FIRST
    evidence = book.evidence
    common = _COMMON_LINE.match
    smtpd_event = _SMTPD_EVENT.match
    postscreen_event = _POSTSCREEN_EVENT.match
    waiting = extras.pending
    handed = extras.handed
    origin = engine.origin  # the host of lines that name none (see Engine.origin)
    # Lines come in time order: most carry the same stamp as the line before.
    last_stamp, last_when = b"", None
    # Counted in locals, which the hot loop updates much faster than attributes.
    lines = parsed = ignored = skipped = after_now = 0
    # What sysklogd's "<host> last message repeated" folds: that host's last line, if it was of
    # interest. host -> (number, line) of its last line of interest; the number of the last line
    # of no interest, whose host is not taken apart (that would cost every line).
    last_of: dict[bytes, tuple[int, bytes]] = {}
    plain_at = 0

    # Substring tests on every line use find() rather than `in`: CPython's `in` on bytes
    # first tries its operand as a byte value and clears the TypeError that raises, which
    # costs more than the search itself. The answer is the same; the time about 60%.
    try:
        for line in handle:
            lines += 1
            if (
                line.find(_MARK_SMTPD) < 0
                and line.find(_MARK_POSTSCREEN) < 0
                and (not servers or line.find(_MARK_SMTP) < 0)
            ):
                if first is None:
                    first = _first_time(line, book=book, stamp_of=stamp_of)
                if line[0] in plausible and line.find(b": ") >= 0:
                    plain_at = lines
                    ignored += 1
                    continue
                # "<stamp> <host> last message repeated 3 times" has no "program: ".
                if _LAST_REPEATED in line:
                    times = _fold_count(line, _LAST_REPEATED)
                    if times:
                        # The host's last line of interest, unless a line of no interest (of
                        # this host, or of another: which one is not known) came after it.
                        folded = last_of.get(_fold_host(line, origin))
                        if folded is not None and folded[0] > plain_at:
                            first = extras.again(folded[1], times, stamp_of=stamp_of,
                                                 first=first)  # fmt: skip
                        ignored += 1  # a fold of a line of no interest is of none either
                        continue
                plain_at = lines
                skipped += 1
                continue

            # Split: the common shape by one match, anything else by split_line.
            shape = common(line)
            if shape is not None:
                stamp, key, host, program, message = shape.groups(b"")
            else:
                fields = split_line(line)
                if fields is None:
                    plain_at = lines
                    skipped += 1
                    continue
                stamp, key, program, message = fields
                space = key.find(b" ")
                if space >= 0:
                    host = key[:space]
                else:  # no host (maillog_file): the rotated family keeps gateways apart
                    host = origin
                    key = origin + b" " + key if origin else key
            last_of[host] = (lines, line)

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

            # Classify: an smtpd event, a postscreen event, a delivery, or a line that shows
            # a session alive.
            if program.endswith(b"smtpd"):
                event = smtpd_event(message)
                if event is None:
                    evidence(key, when)
                    if message.startswith(b"message repeated "):
                        first = extras.unfold(line, stamp_of=stamp_of, first=first)
                    elif extras.smtpd_line(message):
                        parsed += 1
                        continue
                    ignored += 1
                    continue
                shape, raw = event.groups()
                kind = _SMTPD_KINDS[shape]
                if kind == ENDING:
                    evidence(key, when, ending=True)
                    parsed += 1
                    continue
            elif program.endswith(b"postscreen"):
                if message[:5] == b"PASS ":
                    # smtpd's connect, which follows, continues the session of this port.
                    # "PASS OLD [192.0.2.1]:52342", taken apart as _POSTSCREEN_EVENT would.
                    close = message.rfind(b"]:")
                    port = message[close + 2 :]
                    if message[9:10] != b"[" or close < 10 or not port.isdigit():
                        skipped += 1
                        continue
                    raw = message[10:close]
                    client = (host, raw)
                    connects = waiting.get(client)
                    if (connects is not None and len(connects) == 1 and connects[0][0] == port
                            and client not in handed):  # fmt: skip
                        handed[client] = waiting.pop(client)  # the common case of hand()
                    else:
                        extras.hand(client, port)
                    parsed += 1
                    continue
                if message[:13] == b"CONNECT from ":
                    event = postscreen_event(message)
                    if event is not None:
                        # The hot postscreen shape, as _Extras.postscreen would take it.
                        _, raw, port = event.groups()
                        client = (host, raw)
                        connects = waiting.get(client)
                        if connects is None:
                            waiting[client] = [(port, when)]
                        else:
                            connects.append((port, when))
                        parsed += 1
                        continue
                if message.startswith(b"message repeated "):
                    first = extras.unfold(line, stamp_of=stamp_of, first=first)
                    ignored += 1
                    continue
                outcome = extras.postscreen(key, when, message, ranks)
                if outcome is None:
                    skipped += 1
                elif outcome:
                    parsed += 1
                else:
                    ignored += 1
                continue
            elif program.endswith(b"/smtp") or program == b"smtp":
                if message.startswith(b"message repeated "):
                    first = extras.unfold(line, stamp_of=stamp_of, first=first)
                    ignored += 1
                elif extras.delivery(key, when, message):
                    parsed += 1
                else:
                    ignored += 1
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
                start = when
                if handed or waiting:
                    # postscreen handed this client over: one session since its CONNECT
                    client = (host, raw)
                    connects = handed.get(client)
                    if connects is not None and len(connects) == 1:
                        del handed[client]  # the common case of passed()
                        start = min(connects[0][1], when)
                    else:
                        start = extras.passed(client, when)
                book.connect(key, start, source)
            else:
                book.disconnect(key, when, source)
            parsed += 1
    finally:
        if _extras is None:
            extras.flush()
        stats.lines += lines
        stats.parsed += parsed
        stats.ignored += ignored
        stats.skipped += skipped
        stats.after_now += after_now

    return first


class _Extras:
    """The shapes off the hot path: postscreen sessions, deliveries to internal servers,
    temporary failures, queue ids, and the folds of a logger."""

    def __init__(self, engine: Engine, book: SessionBook, addresses: dict, stats: Stats,
                 ranks: dict[str, int]) -> None:  # fmt: skip
        self.engine = engine
        self.book = book
        self.addresses = addresses
        self.stats = stats
        self.ranks = ranks
        # (host, client address as written) -> [(port, CONNECT time)] of the postscreen
        # sessions not yet ended, oldest first: in `pending` while postscreen tests them, in
        # `handed` once it passed them to smtpd (PASS, ALLOWLISTED). smtpd's next connect of
        # that client on that host continues the oldest handed one, or else the oldest pending
        # one. Between files they wait in the book as open sessions.
        self.pending: dict[tuple[bytes, bytes], list[tuple[bytes, float]]] = {}
        self.handed: dict[tuple[bytes, bytes], list[tuple[bytes, float]]] = {}
        for marker, table in ((_POSTSCREEN_KEY, self.pending), (_PASSED_KEY, self.handed)):
            parked = [key for key in book.open_sessions
                      if isinstance(key, bytes) and marker in key]  # fmt: skip
            for parked_key in parked:
                start = book.open_sessions.pop(parked_key)[0]
                host, _, endpoint = parked_key.partition(marker)
                close = endpoint.rfind(b"]:")
                entry = (endpoint[close + 2 :], start)
                table.setdefault((host, endpoint[1:close]), []).append(entry)
        # queue id -> client address, to name the source of a message a server defers
        self.queue: dict[str, str] = engine.format_state.setdefault("postfix_queue", {})

    def source(self, raw: bytes) -> str | None:
        if raw[:5] in _IPV6_TAGS:
            raw = raw[5:]
        source = self.addresses.get(raw, False)
        if source is False:
            source = _normalise(raw, self.addresses, self.stats)
        return source

    # -- postscreen -------------------------------------------------------------------------

    def postscreen(self, key: bytes, when: float, message: bytes, ranks: dict) -> bool | None:
        """True for a shape of interest, False for another line, None for a broken one."""
        event = _POSTSCREEN_EVENT.match(message)
        if event is None:
            if message.startswith(b"NOQUEUE: reject: "):
                return self.reject(message)
            if message.startswith(_POSTSCREEN_PREFIXES):
                return None  # a shape of interest without its client
            return False
        shape, raw, port = event.groups()
        kind = _POSTSCREEN_KINDS[shape]
        if kind == RANK:
            return _read_rank(message[11:], ranks, self.addresses, self.stats) or None
        host = key[: key.find(b" ")] if b" " in key else b""
        if kind == CONNECT:
            waiting = self.pending.get((host, raw))
            if waiting is None:
                self.pending[(host, raw)] = [(port, when)]
            else:
                waiting.append((port, when))
            return True
        if kind == "pass":
            return self.hand((host, raw), port)
        source = self.source(raw)
        if kind == "pregreet" or kind == "allowlisted" or kind == "denylisted":
            self.engine.note(source, kind)
            if kind == "allowlisted":
                self.hand((host, raw), port)  # postscreen passes it to smtpd at once
            return True
        # DISCONNECT, HANGUP or COMMAND TIME LIMIT: the session ends here unless smtpd took it
        # over; the DISCONNECT that may follow the other two ends nothing more.
        if shape == b"COMMAND TIME LIMIT":
            self.engine.note(source, "command_time_limit")
        for table in (self.pending, self.handed):
            start = _take((host, raw), port, table)
            if start is not None:
                self.book.session(start, when, source)
                break
        return True

    def hand(self, client: tuple[bytes, bytes], port: bytes) -> bool:
        """ "PASS NEW [192.0.2.1]:52342" (or OLD, or ALLOWLISTED): postscreen hands the
        connection of `client` (host, address) on `port` to smtpd."""
        start = _take(client, port, self.pending)
        if start is not None:
            self.handed.setdefault(client, []).append((port, start))
        return True

    def passed(self, client: tuple[bytes, bytes], when: float) -> float:
        """When the session of smtpd's connect at `when` from `client` (host, address as
        written) began: at the CONNECT of the oldest postscreen session of that client on that
        host that postscreen passed, or else of the oldest one still in its tests, if any."""
        for table in (self.handed, self.pending):
            waiting = table.get(client)
            if waiting:
                start = waiting.pop(0)[1]
                if not waiting:
                    del table[client]
                return min(start, when)
        return when

    def flush(self) -> None:
        """Park the postscreen sessions still open in the book, for `finish()` (they are open
        sessions at `now`), the checkpoint and the next file."""
        book = self.book
        for marker, table in ((_POSTSCREEN_KEY, self.pending), (_PASSED_KEY, self.handed)):
            for (host, raw), waiting in table.items():
                source = self.source(raw)
                for port, start in waiting:
                    session = host + marker + b"[" + raw + b"]:" + port
                    book.connect(session, start, source, place=False)
            table.clear()

    # -- smtpd lines besides connect and disconnect -------------------------------------------

    def smtpd_line(self, message: bytes) -> bool:
        if b"reject: " in message:
            return bool(self.reject(message))
        if b": client=" in message:
            return self.engine.track_servers and self.client(message)
        if b"limit exceeded: " in message:
            # "warning: Connection rate limit exceeded: 12 from name[192.0.2.1] for service
            # smtp": smtpd answers 421.
            limit = _LIMIT.match(message)
            if limit is None:
                return False
            raw = peer_address(message, limit.end())
            source = self.source(raw) if raw is not None else None
            self.engine.note(source, "connection_limit")
            self.engine.reply(source, 421)
            return source is not None
        return False

    def reject(self, message: bytes) -> bool:
        """ "NOQUEUE: reject: RCPT from name[192.0.2.1]: 450 4.7.25 ..." (or a queue id
        before it; also postscreen's "[192.0.2.1]:52342: 450 ..."): the code the gateway
        answered the client."""
        match = _REJECT_LINE.match(message)
        if match is None:
            return False
        source, code = self.source(match.group(1)), int(match.group(2))
        self.engine.reply(source, code)
        return source is not None and 400 <= code < 500  # only temporary failures are counted

    def client(self, message: bytes) -> bool:
        """ "4F9D21E65F: client=name[192.0.2.1]": which client a queue id came from."""
        queue_id, _, rest = message.partition(b": client=")
        raw = peer_address(rest)
        source = self.source(raw) if raw is not None else None
        if source is None or not _QUEUE_ID.fullmatch(queue_id):
            return False
        queue = self.queue
        if len(queue) >= QUEUE_LIMIT:
            # Keep the newer half: deleting the oldest one by one would slow every look-up.
            queue = self.queue = self.engine.format_state["postfix_queue"] = dict(
                list(queue.items())[QUEUE_LIMIT // 2 :]
            )
        queue[queue_id.decode("ascii")] = source
        return True

    # -- deliveries to internal servers --------------------------------------------------------

    def delivery(self, key: bytes, when: float, message: bytes) -> bool:
        """ "QID: to=<u@d>, relay=name[10.0.0.5]:25, delay=1.2, delays=0.1/0/0.5/0.6, ...":
        a session of the gateway to the server, from its connection set-up to this line. Only
        Postfix's relay= field right after the recipients names the server."""
        fields = _DELIVERY.match(message)
        if fields is None:
            return False
        relay = fields.end()
        field_end = message.find(b", ", relay)
        bracket = message.find(b"[", relay, field_end if field_end > 0 else len(message))
        if bracket < 0:
            return False  # relay=none, or a local transport: no server in the relay field
        raw = peer_address(message, relay)
        if raw is None:
            return False
        server = self.source(raw)
        if server is None:
            return False
        delays = _DELAYS.search(message, relay)
        length = float(delays.group(1)) + float(delays.group(2)) if delays else 0.0
        servers = self.engine.servers
        servers.connect(key, when - length, server)
        servers.disconnect(key, when, server)
        reply = _SAID.search(message, relay)
        if reply is not None:
            code = int(reply.group(1))
            self.engine.server_reply(server, code)
            if 400 <= code < 500:
                queue_id = message.partition(b": ")[0].decode("ascii", "replace")
                source = self.queue.get(queue_id)
                self.engine.note(source, "server_421" if code == 421 else "server_tempfail")
        return True

    # -- logger folds ---------------------------------------------------------------------------

    def unfold(self, line: bytes, *, stamp_of: Callable, first: float | None) -> float | None:
        """rsyslog's "<header> message repeated 3 times: [ <message>]": the message again."""
        match = _REPEATED.match(line)
        if match is None:
            return first
        head, times, message = match.groups()
        return self.again(head + message + b"\n", min(int(times), MAX_REPEATS),
                          stamp_of=stamp_of, first=first)  # fmt: skip

    def again(self, line: bytes, times: int, *, stamp_of: Callable, first: float | None
              ) -> float | None:  # fmt: skip
        return read_postfix([line] * min(times, MAX_REPEATS), book=self.book, stamp_of=stamp_of,
                            stats=self.stats, ranks=self.ranks, addresses=self.addresses,
                            first=first, engine=self.engine, _extras=self)  # fmt: skip


def _take(client: tuple[bytes, bytes], port: bytes,
          table: dict[tuple[bytes, bytes], list[tuple[bytes, float]]]) -> float | None:  # fmt: skip
    """Remove the session of `client` on `port` from `table`; its start, or None."""
    waiting = table.get(client)
    if waiting is None:
        return None
    for position, (connected_port, start) in enumerate(waiting):
        if connected_port == port:
            del waiting[position]
            if not waiting:
                del table[client]
            return start
    return None


def _fold_host(line: bytes, origin: bytes) -> bytes:
    """The host of "<stamp> <host> last message repeated ...", as the common line shape (or,
    for a line without one, `origin`) names it."""
    head = line[: line.find(_LAST_REPEATED)].rstrip()
    stamp_end = head.find(b" ") if line[:1] in b"0123456789" else (15 if len(head) > 15 else -1)
    return (head[stamp_end + 1 :] if stamp_end >= 0 else b"") or origin


def _fold_count(line: bytes, marker: bytes) -> int:
    tail = line[line.find(marker) + len(marker) :]
    number = tail.split(b" ", 1)[0]
    return min(int(number), MAX_REPEATS) if number.isdigit() else 0


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
