"""Sendmail reader: each line shape and each kind of fault, with its per-session result.

Line shapes follow Sendmail's own messages (sendmail/srvrsmtp.c, collect.c and the
check_relay ruleset of cf/m4/proto.m4) as syslog writes them.
"""

from __future__ import annotations

from datetime import UTC
from pathlib import Path

import pytest

from ansible_collections.campusnet.smtpguard.plugins.module_utils import _formats, _sendmail
from ansible_collections.campusnet.smtpguard.plugins.module_utils._engine import Engine
from ansible_collections.campusnet.smtpguard.plugins.module_utils._sessions import SessionBook
from ansible_collections.campusnet.smtpguard.plugins.module_utils._timestamps import (
    TimestampParser,
)
from support.logs import NOW, by_source, run_analysis, sessions_of

DATA = Path(__file__).resolve().parent.parent / "data" / "formats"
FROM = b"Dec  3 09:50:00 mx2 sm-mta[500]: 5B3A000001: from=<a@example.org>, size=10, class=0, " \
       b"nrcpts=1, proto=ESMTP, daemon=MTA, relay=host.example.net [192.0.2.9]"  # fmt: skip
LAST = b"Dec  3 09:59:59 mx2 postfix/pickup[3]: keeps the log going"


def feed(*lines: bytes) -> Engine:
    book = SessionBook(window_start=NOW - 86400, now=NOW, thresholds=(0.0,))
    engine = Engine(book)
    data = b"".join(line + b"\n" for line in lines)
    _sendmail.read(iter(data.splitlines(keepends=True)), engine=engine,
                   stamp_of=TimestampParser(zone=UTC, now=NOW))  # fmt: skip
    book.finish()
    return engine


def at(clock: bytes, pid: bytes, text: bytes) -> bytes:
    return b"Dec  3 " + clock + b" mx2 sm-mta[" + pid + b"]: " + text


# (lines, {source: (sessions, longest, open)}, (parsed, ignored, skipped))
CASES = [
    pytest.param(
        [
            at(
                b"09:50:00",
                b"14956",
                b"w23NZFZk014956: rejecting commands from bot.example.net "
                b"[IPv6:2001:db8::a1] due to pre-greeting traffic after 3 seconds",
            ),
            at(
                b"09:50:10",
                b"14956",
                b"w23NZFZk014956: bot.example.net [IPv6:2001:db8::a1] did "
                b"not issue MAIL/EXPN/VRFY/ETRN during connection to MTA",
            ),
        ],
        {"2001:db8::a1": (1, 10.0, 0)},
        (2, 0, 0),
        id="regression-pregreet-ipv6",
    ),
    pytest.param(
        [
            FROM,
            at(
                b"09:50:03",
                b"500",
                b"5B3A000001: to=<u@campus.example>, delay=00:00:03, "
                b"mailer=relay, relay=mx1.campus.example [10.0.0.5], stat=Sent (ok)",
            ),
            LAST,
        ],
        {"192.0.2.9": (1, 3.0, 0)},
        (2, 1, 0),
        id="settled-then-silent-ends-at-last-line",
    ),
    pytest.param(
        [FROM, at(b"09:59:00", b"501", b"5B3A000002: from=<b@example.org>, relay=[192.0.2.8]")],
        {"192.0.2.9": (1, 0.0, 0), "192.0.2.8": (1, 60.0, 1)},
        (2, 0, 0),
        id="open-without-close",
    ),
    pytest.param(
        [
            at(
                b"09:50:00",
                b"502",
                b"5B3A000003: ruleset=check_rcpt, arg1=<u@campus.example>, "
                b"relay=host [192.0.2.7], reject=451 4.7.1 Please try again later",
            ),
            at(
                b"09:55:00",
                b"502",
                b"5B3A000003: timeout waiting for input from host [192.0.2.7] "
                b"during server cmd read",
            ),
            LAST,
        ],
        {"192.0.2.7": (1, 300.0, 0)},
        (2, 1, 0),
        id="slow-post-kept-whole",
    ),
    pytest.param(
        [
            at(
                b"09:50:00",
                b"503",
                b"NOQUEUE: host [192.0.2.6] did not issue MAIL/EXPN/VRFY/ETRN"
                b" during connection to MTA",
            )
        ],
        {"192.0.2.6": (1, 0.0, 0)},
        (1, 0, 0),
        id="close-without-open",
    ),
    pytest.param(
        [
            FROM,
            at(b"09:50:05", b"500", b"5B3A000009: from=<c@example.org>, relay=other [192.0.2.5]"),
            at(
                b"09:50:08",
                b"500",
                b"5B3A000009: lost input channel from other [192.0.2.5] to MTA after rcpt",
            ),
        ],
        {"192.0.2.9": (1, 0.0, 0), "192.0.2.5": (1, 3.0, 0)},
        (3, 0, 0),
        id="pid-reused",
    ),
    pytest.param(
        [FROM, at(b"09:49:00", b"500", b"5B3A000001: collect: premature EOM: unexpected close")],
        {"192.0.2.9": (1, 0.0, 0)},
        (2, 0, 0),
        id="clock-going-back",
    ),
    pytest.param(
        [
            at(
                b"09:50:00",
                b"504",
                b"NOQUEUE: ruleset=check_relay, arg1=unknown, arg2=unknown, "
                b"relay=[unknown], reject=421 4.3.2 busy",
            )
        ],
        {},
        (1, 0, 0),
        id="unknown-address",
    ),
    pytest.param([FROM[:-5]], {}, (0, 0, 1), id="truncated-line"),
    pytest.param([b"\x00garbage", b"Dec  3 09:5"], {}, (0, 0, 2), id="corrupt-lines"),
    pytest.param(
        [FROM.replace(b"host.example.net", b"h\xff\xfe.example")],
        {"192.0.2.9": (1, 600.0, 1)},
        (1, 0, 0),
        id="non-utf8",
    ),
    pytest.param(
        [FROM + b", " + b"x" * 200_000], {"192.0.2.9": (1, 600.0, 1)}, (1, 0, 0), id="huge-line"
    ),
    pytest.param([FROM.replace(b"192.0.2.9", b"192.0.2.999")], {}, (0, 0, 1), id="not-an-address"),
]


@pytest.mark.parametrize(("lines", "expected", "counts"), CASES)
def test_line_shapes_give_the_right_sessions(lines, expected, counts):
    engine = feed(*lines)

    assert sessions_of(engine.book) == expected
    stats = engine.stats
    assert (stats.parsed, stats.ignored, stats.skipped) == counts
    assert stats.lines == stats.parsed + stats.ignored + stats.skipped + stats.after_now


def test_check_relay_421_ends_the_session_and_counts_the_reply():
    engine = feed(
        at(
            b"09:50:00",
            b"600",
            b"NOQUEUE: ruleset=check_relay, arg1=bot.example.net, "
            b"arg2=192.0.2.44, relay=bot.example.net [192.0.2.44], reject=421 4.3.2 Connection "
            b"rate limit exceeded.",
        ),
        at(
            b"09:50:01",
            b"601",
            b"5B3A000010: to=<u@campus.example>, delay=00:00:01, "
            b"mailer=relay, relay=mx2.campus.example [10.0.0.6], dsn=4.0.0, stat=Deferred: 421 "
            b"4.3.2 Service not available",
        ),
    )

    assert sessions_of(engine.book) == {"192.0.2.44": (1, 0.0, 0)}
    assert engine.replies == {"192.0.2.44": {"421": 1, "4xx": 1}}
    assert engine.notes == {"192.0.2.44": {"rejected": 1}}
    assert engine.server_replies == {"10.0.0.6": {"421": 1, "4xx": 1}}


def test_pregreet_and_timeouts_are_noted():
    engine = feed(
        at(
            b"09:50:00",
            b"700",
            b"w23: rejecting commands from bot [192.0.2.1] due to "
            b"pre-greeting traffic after 0 seconds",
        ),
        at(
            b"09:50:30",
            b"701",
            b"w24: timeout waiting for input from bot [192.0.2.1] during server cmd read",
        ),
    )

    assert engine.notes == {"192.0.2.1": {"pregreet": 1, "command_time_limit": 1}}


def test_detection_picks_sendmail_and_sendmail_claims_no_other_log():
    sendmail = (DATA / "sendmail" / "maillog").read_bytes().splitlines(keepends=True)[:200]
    assert _formats.detect(sendmail) == "sendmail"
    postfix_sendmail = [b"Dec  3 09:50:00 mx1 postfix/sendmail[77]: fatal: usage"]
    assert not _sendmail.looks_like(postfix_sendmail)

    others = [path for path in DATA.rglob("*") if path.is_file() and "sendmail" not in path.parts]
    others += [path for path in (DATA.parent.parent.parent / "demo" / "sample").rglob("*.log*")]
    for path in others:
        head = path.read_bytes().splitlines(keepends=True)[:200]
        assert not _sendmail.looks_like(head), path


# Text a client chose that holds "relay=" (a sender, a message id, a recipient, a reject
# text) or a closing shape's words: only the relay= field Sendmail wrote names the client.
CLIENT_TEXT = [
    pytest.param(
        b"5B3A000011: from=<a@example.org>, size=10, class=0, nrcpts=1, msgid=<x>, "
        b"relay=[203.0.113.7], y=<z>, proto=ESMTP, daemon=MTA, relay=host.example.net "
        b"[192.0.2.9]",
        id="relay-field-in-the-msgid",
    ),
    pytest.param(
        b"5B3A000011: from=<relay=[203.0.113.7]@example.org>, size=10, class=0, nrcpts=1, "
        b"proto=ESMTP, daemon=MTA, relay=host.example.net [192.0.2.9]",
        id="relay-in-the-sender",
    ),
    pytest.param(
        b'5B3A000011: from=<"a, relay=[203.0.113.7]"@example.org>, size=10, class=0, '
        b"nrcpts=1, proto=ESMTP, daemon=MTA, relay=host.example.net [192.0.2.9]",
        id="relay-field-in-a-quoted-sender",
    ),
    pytest.param(
        b'5B3A000011: ruleset=check_rcpt, arg1=<"a, relay=[203.0.113.7]"@campus.example>, '
        b"relay=host.example.net [192.0.2.9], reject=451 4.7.1 Please try again later",
        id="relay-field-in-the-ruleset-argument",
    ),
    pytest.param(
        b"5B3A000011: ruleset=check_mail, arg1=<a@example.org>, relay=host.example.net "
        b"[192.0.2.9], reject=451 4.1.8 <a, relay=[203.0.113.7]>... Domain of sender address "
        b"does not resolve",
        id="relay-field-in-the-reject-text",
    ),
    pytest.param(
        b"5B3A000011: from=<a@example.org>, size=10, class=0, nrcpts=1, msgid=<lost input "
        b"channel from x [203.0.113.7] did not issue MAIL/EXPN/VRFY/ETRN during connection to "
        b"MTA>, proto=ESMTP, daemon=MTA, relay=host.example.net [192.0.2.9]",
        id="closing-words-in-the-msgid",
    ),
]


@pytest.mark.parametrize("text", CLIENT_TEXT)
def test_only_the_relay_field_sendmail_wrote_names_the_client(text):
    engine = feed(at(b"09:50:00", b"900", text))

    assert sessions_of(engine.book) == {"192.0.2.9": (1, 600.0, 1)}
    assert set(engine.replies) <= {"192.0.2.9"}
    assert (engine.stats.parsed, engine.stats.skipped) == (1, 0)


def test_a_delivery_s_server_is_the_relay_field_not_the_recipient():
    engine = feed(
        at(
            b"09:50:01",
            b"901",
            b'5B3A000012: to=<"x, relay=[10.9.9.9]"@campus.example>, delay=00:00:01, '
            b"mailer=relay, pri=30000, relay=mx2.campus.example [10.0.0.6], dsn=4.0.0, "
            b"stat=Deferred: 421 4.3.2 Service not available",
        )
    )

    assert engine.server_replies == {"10.0.0.6": {"421": 1, "4xx": 1}}


@pytest.mark.parametrize(
    "peer",
    [
        b"[192.0.2.5]",
        b"host.example.net [192.0.2.5]",
        b"[IPv6:2001:db8::5]",
        b"host.example.net [192.0.2.5] (may be forged)",
        b"[192.0.2.5] (may be forged)",
    ],
)
def test_did_not_issue_names_the_client_in_every_form(peer):
    engine = feed(
        at(b"09:50:00", b"902", b"NOQUEUE: " + peer + b" did not issue MAIL/EXPN/VRFY/ETRN "
           b"during connection to MTA")  # fmt: skip
    )

    source = "2001:db8::5" if b"IPv6" in peer else "192.0.2.5"
    assert sessions_of(engine.book) == {source: (1, 0.0, 0)}


def test_lines_shipped_twice_count_once_as_with_postfix():
    close = at(b"09:50:09", b"500", b"5B3A000001: lost input channel from host.example.net "
               b"[192.0.2.9] to MTA after rcpt")  # fmt: skip
    alone = at(b"09:51:00", b"503", b"NOQUEUE: host [192.0.2.6] did not issue "
               b"MAIL/EXPN/VRFY/ETRN during connection to MTA")  # fmt: skip

    engine = feed(FROM, FROM, close, close, alone, alone)

    assert sessions_of(engine.book) == {"192.0.2.9": (1, 9.0, 0), "192.0.2.6": (1, 0.0, 0)}
    assert engine.book.counts["repeated_lines"] == 2


@pytest.mark.parametrize(
    ("relay", "source"),
    [
        (b"host.example.net [192.0.2.9]", "192.0.2.9"),
        (b"[192.0.2.9]", "192.0.2.9"),
        (b"[IPv6:2001:db8::9]", "2001:db8::9"),
        (b"host.example.net [192.0.2.9] (may be forged)", "192.0.2.9"),
        (b"user@host.example.net [192.0.2.9]", "192.0.2.9"),
    ],
)
def test_the_relay_field_gives_its_address_in_every_form(relay, source):
    engine = feed(at(b"09:50:00", b"903", b"5B3A000013: from=<a@example.org>, size=10, class=0, "
                     b"nrcpts=1, proto=ESMTP, daemon=MTA, relay=" + relay))  # fmt: skip

    assert sessions_of(engine.book) == {source: (1, 600.0, 1)}


def test_a_local_sender_names_no_client_and_is_no_fault():
    engine = feed(at(b"09:50:00", b"904", b"5B3A000014: from=<root@campus.example>, size=10, "
                     b"class=0, nrcpts=1, relay=root@localhost"))  # fmt: skip

    assert sessions_of(engine.book) == {}
    assert (engine.stats.parsed, engine.stats.ignored, engine.stats.skipped) == (0, 1, 0)


# The review's input: a ruleset's arg1 (a message id the client chose) written unbracketed
# before Sendmail's own relay=, imitating a relay= and a reject= of another address.
STARTTLS = b"STARTTLS=server, relay=bot.example [192.0.2.9], version=TLSv1.3, verify=NO, " \
           b"cipher=TLS_AES_256_GCM_SHA384, bits=256/256"  # fmt: skip
IMITATED = b"w23NZFZk014900: ruleset=check_mid, arg1=x, relay=mx.partner.example [203.0.113.5]," \
           b" reject=553 5.0.0 Bad Message-Id, relay=bot.example [192.0.2.9], reject=553 5.0.0 " \
           b"Bad Message-Id"  # fmt: skip
ACCEPTED = b"w23NZFZk014900: from=<a@b.example>, size=1, class=0, nrcpts=1, msgid=<x@y>, " \
           b"proto=ESMTP, daemon=MTA, relay=bot.example [192.0.2.9]"  # fmt: skip


def test_a_ruleset_argument_imitating_a_relay_field_names_nobody_and_splits_no_session():
    lines = []
    for pid in (b"200", b"201", b"202", b"203", b"204"):
        lines += [at(b"09:50:00", pid, STARTTLS), at(b"09:50:01", pid, IMITATED),
                  at(b"09:50:02", pid, ACCEPTED)]  # fmt: skip

    engine = feed(*lines)

    assert sessions_of(engine.book) == {"192.0.2.9": (5, 600.0, 5)}
    assert engine.replies == {}
    assert (engine.stats.parsed, engine.stats.ignored, engine.stats.skipped) == (10, 0, 5)
    assert list(engine.skip_reasons.values()) == [5]
    assert "relay=" in next(iter(engine.skip_reasons))


# ruleset= lines: `ruleset=R, arg1=A[, arg2=B], relay=..., reject=...`, and what the client's
# arg1, arg2 or reject text may hold. (text, the client, whether the line is skipped)
RULESETS = {
    "check_rcpt": (b"ruleset=check_rcpt, arg1=<u@campus.example>, relay=bot.example "
                   b"[192.0.2.9], reject=450 4.7.1 <u@campus.example>... try later",
                   "192.0.2.9", False),
    "with arg2": (b"ruleset=check_compat, arg1=<a@b.example>, arg2=<u@campus.example>, "
                  b"relay=bot.example [192.0.2.9], reject=450 4.7.1 later", "192.0.2.9", False),
    "quarantine": (b"ruleset=check_eoh, arg1=x, relay=bot.example [192.0.2.9], quarantine=held",
                   "192.0.2.9", False),
    "arg1 imitating arg2": (b"ruleset=check_mid, arg1=x, arg2=y, relay=bot.example [192.0.2.9],"
                            b" reject=450 4.7.1 later", "192.0.2.9", False),
    "relay in arg1": (b"ruleset=check_mid, arg1=x, relay=m [203.0.113.5], reject=450 4.0.0 y, "
                      b"relay=bot.example [192.0.2.9], reject=450 4.0.0 y", None, True),
    "relay in arg2": (b"ruleset=check_compat, arg1=<a@b.example>, arg2=y, relay=m [203.0.113.5]"
                      b", relay=bot.example [192.0.2.9], reject=450 4.0.0 y", None, True),
    "relay in the reject text": (b"ruleset=check_mid, arg1=x, relay=bot.example [192.0.2.9], "
                                 b"reject=450 4.0.0 y, relay=m [203.0.113.5]", None, True),
    "relay after arg1's reject": (b"ruleset=check_mid, arg1=x, reject=450 y, relay=bot.example "
                                  b"[192.0.2.9], reject=450 4.0.0 y", "192.0.2.9", False),
    "relay not before the verdict": (b"ruleset=check_mid, arg1=x, relay=m [203.0.113.5], y=z",
                                     None, True),
}  # fmt: skip


@pytest.mark.parametrize(("text", "client", "skipped"), RULESETS.values(), ids=RULESETS)
def test_a_ruleset_line_names_the_client_only_by_sendmail_s_relay_field(text, client, skipped):
    engine = feed(at(b"09:50:00", b"905", b"w23NZFZk014900: " + text))

    assert sessions_of(engine.book) == ({client: (1, 600.0, 1)} if client else {})
    assert set(engine.replies) == ({client} if client and b"=450" in text else set())
    assert (engine.stats.parsed, engine.stats.skipped) == ((0, 1) if skipped else (1, 0))


def test_a_fold_imitated_in_a_msgid_keeps_its_line():
    engine = feed(at(b"09:50:00", b"300", b"w23NZFZk014900: from=<a@b.example>, size=1, class=0, "
                     b"nrcpts=1, msgid=<x: message repeated 999999 times: [ y>, proto=ESMTP, "
                     b"daemon=MTA, relay=bot.example [192.0.2.9]"))  # fmt: skip

    assert engine.stats.lines == 1
    assert sessions_of(engine.book) == {"192.0.2.9": (1, 600.0, 1)}


# -- shapes only where Sendmail writes them ------------------------------------------------------

# A recipient the client chose that imitates Sendmail's closing lines: the line is client text
# (a message that begins with "<"), never a shape and never a client.
IMITATED_CLOSE = {
    "did not issue": b'5B3A000001: <"x [203.0.113.77] did not issue MAIL/EXPN/VRFY/ETRN during '
                     b'connection to MTA"@campus.example>... User unknown',
    "did not issue, no name": b'5B3A000001: <"[203.0.113.77] did not issue MAIL/EXPN/VRFY/ETRN '
                              b'during connection to MTA"@campus.example>... User unknown',
    "did not issue, unquoted": b"5B3A000001: <x@campus.example>... x [203.0.113.77] did not "
                               b"issue MAIL/EXPN/VRFY/ETRN during connection to MTA",
    "lost input channel": b'5B3A000001: <"lost input channel from x [203.0.113.77] to MTA"'
                          b"@campus.example>... User unknown",
    "timeout waiting": b'5B3A000001: <"timeout waiting for input from x [203.0.113.77] during '
                       b'server cmd read"@campus.example>... User unknown',
    "collect": b'5B3A000001: <"collect: read timeout on connection from x [203.0.113.77]"'
               b"@campus.example>... User unknown",
    "rejecting commands": b'5B3A000001: <"rejecting commands from x [203.0.113.77] due to '
                          b'pre-greeting traffic"@campus.example>... User unknown',
}  # fmt: skip


@pytest.mark.parametrize("text", IMITATED_CLOSE.values(), ids=IMITATED_CLOSE)
def test_a_recipient_imitating_a_closing_line_is_no_shape_and_names_nobody(text):
    close = at(b"09:59:00", b"500", b"5B3A000001: lost input channel from host.example.net "
               b"[192.0.2.9] to MTA after rcpt")  # fmt: skip

    engine = feed(FROM, at(b"09:50:01", b"500", text), close)

    assert sessions_of(engine.book) == {"192.0.2.9": (1, 540.0, 0)}
    assert engine.notes == {}
    assert (engine.stats.parsed, engine.stats.ignored, engine.stats.skipped) == (2, 1, 0)


# -- a client that holds the connection after its message ------------------------------------------

HELD = at(b"09:00:00", b"600", b"5B3A000002: from=<a@example.org>, size=10, class=0, nrcpts=1, "
          b"proto=ESMTP, daemon=MTA, relay=holder.example.net [192.0.2.10]")  # fmt: skip
SENT = at(b"09:00:01", b"600", b"5B3A000002: to=<u@campus.example>, delay=00:00:01, "
          b"mailer=relay, relay=mx1.campus.example [10.0.0.5], stat=Sent (ok)")  # fmt: skip
GOING = at(b"09:59:59", b"601", b"keeps the log going")
HOLDER_CLOSES = {
    "timeout": (b"09:40:00", b"5B3A000002: timeout waiting for input from holder.example.net "
                b"[192.0.2.10] during server cmd read", 2400.0),
    "lost input channel": (b"09:09:00", b"5B3A000002: lost input channel from "
                           b"holder.example.net [192.0.2.10] to MTA after quit", 540.0),
}  # fmt: skip


@pytest.mark.parametrize(("clock", "text", "longest"), HOLDER_CLOSES.values(), ids=HOLDER_CLOSES)
def test_a_closing_line_after_a_silence_ended_session_extends_it(clock, text, longest):
    close = at(clock, b"600", text)

    engine = feed(HELD, SENT, close, GOING)
    twice = feed(HELD, SENT, close, close, GOING)

    assert sessions_of(engine.book) == {"192.0.2.10": (1, longest, 0)}
    assert sessions_of(twice.book) == {"192.0.2.10": (1, longest, 0)}
    assert twice.book.counts["repeated_lines"] == 1


def test_a_closing_line_of_another_client_on_a_reused_pid_is_its_own_session():
    close = at(b"09:40:00", b"600", b"5B3A000003: timeout waiting for input from other.example "
               b"[192.0.2.11] during server cmd read")  # fmt: skip

    engine = feed(HELD, SENT, close, GOING)

    assert sessions_of(engine.book) == {"192.0.2.10": (1, 1.0, 0), "192.0.2.11": (1, 0.0, 0)}


def test_a_closing_line_long_after_the_command_timeout_extends_nothing():
    early = [line.replace(b" 09:00:0", b" 06:00:0") for line in (HELD, SENT)]
    close = at(b"09:00:00", b"600", b"5B3A000002: lost input channel from holder.example.net "
               b"[192.0.2.10] to MTA after quit")  # fmt: skip

    engine = feed(*early, at(b"08:00:00", b"601", b"keeps the log going"), close)

    assert sessions_of(engine.book) == {"192.0.2.10": (2, 1.0, 0)}


def test_a_held_connection_closed_in_the_next_run_is_one_session(tmp_path):
    log, state = tmp_path / "maillog", tmp_path / "state.json"
    close = at(b"09:40:00", b"600", HOLDER_CLOSES["timeout"][1])
    log.write_bytes(b"".join(line + b"\n" for line in (HELD, SENT, at(b"09:10:00", b"601", b"x"))))
    options = {"format": "sendmail", "window": 7200.0}
    run_analysis(log, state_path=str(state), **options)
    with open(log, "ab") as handle:
        handle.write(close + b"\n" + GOING + b"\n")

    again = run_analysis(log, state_path=str(state), **options)
    full = run_analysis(log, **options)

    assert again["state"]["resumed"] is True
    assert by_source(again)["192.0.2.10"]["sessions"] == 1
    assert by_source(again)["192.0.2.10"]["longest_session"] == 2400
    assert by_source(again) == by_source(full)
