"""Postfix line shapes in, sessions and sources out."""

from __future__ import annotations

import pytest

from ansible_collections.campusnet.smtpguard.plugins.module_utils._postfix import (
    Stats,
    read_postfix,
    split_line,
    strip_queue_id,
)
from ansible_collections.campusnet.smtpguard.plugins.module_utils._sessions import SessionBook
from ansible_collections.campusnet.smtpguard.plugins.module_utils._timestamps import (
    TimestampParser,
)
from support.logs import NOW, UTC, PostfixLog, read_log, sessions_of

PROGRAMS = [
    "postfix/smtpd",
    "postfix/submission/smtpd",
    "postfix/smtps/smtpd",
    "postfix-out/smtpd",
    "postfix-out/submission/smtpd",
]


@pytest.mark.parametrize("program", PROGRAMS)
def test_every_smtpd_program_name_pairs_a_session(program):
    log = PostfixLog(program=program)
    log.session("192.0.2.7", start=NOW - 100, duration=35)

    book, stats = read_log(log)

    assert sessions_of(book) == {"192.0.2.7": (1, 35.0, 0)}
    assert stats.parsed == 2


@pytest.mark.parametrize("program", ["postfix/smtp", "postfix/postscreen", "postfix/qmgr"])
def test_connect_lines_of_other_programs_make_no_session(program):
    log = PostfixLog(program=program)
    log.session("192.0.2.7", start=NOW - 100, duration=35)

    book, stats = read_log(log)

    assert book.sources == {}
    assert book.counts["sessions"] == 0
    assert stats.ignored == 2


ENDINGS = [
    "lost connection after CONNECT",
    "lost connection after DATA (0 bytes)",
    "timeout after RCPT",
    "timeout after END-OF-MESSAGE",
    "too many errors after AUTH",
]
PREFIXES = ["", "NOQUEUE: ", "3F1A2B4C5D: ", "4ZxYvb1234zC9q: "]


@pytest.mark.parametrize("prefix", PREFIXES, ids=["bare", "noqueue", "short-id", "long-id"])
@pytest.mark.parametrize("ending", ENDINGS)
def test_ending_line_with_or_without_queue_id_marks_where_the_session_ended(ending, prefix):
    # The disconnect never comes; the pid's next connect ends the session at its ending line.
    log = PostfixLog()
    log.connect(NOW - 100, "192.0.2.7", pid=100)
    log.line(NOW - 75, f"{prefix}{ending} from unknown[192.0.2.7]", pid=100)
    log.connect(NOW - 40, "192.0.2.8", pid=100)
    log.disconnect(NOW - 30, "192.0.2.8", pid=100)

    book, stats = read_log(log)

    assert sessions_of(book) == {"192.0.2.7": (1, 25.0, 0), "192.0.2.8": (1, 10.0, 0)}
    assert book.counts["ended_unknown"] == 1
    assert stats.parsed == 4


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (b"NOQUEUE: lost connection after DATA", b"lost connection after DATA"),
        (b"3F1A2B4C5D: timeout after RCPT", b"timeout after RCPT"),
        (b"4ZxYvb1234zC9q: too many errors after AUTH", b"too many errors after AUTH"),
        (b"lost connection after DATA", b"lost connection after DATA"),
        # A severity is not a queue id: what follows it may quote a client.
        (b"warning: connect from unknown[198.51.100.66]", None),
        (b"fatal: connect from x", None),
        (b"statistics: max connection rate", None),
        (b"reject: RCPT from unknown[192.0.2.7]: 554", None),
    ],
)
def test_strip_queue_id_removes_only_noqueue_and_queue_ids(message, expected):
    assert strip_queue_id(message) == (message if expected is None else expected)


ADDRESSES = [
    ("unknown[192.0.2.7]", "192.0.2.7"),
    ("unknown[192.0.2.7]:52100", "192.0.2.7"),
    ("mail.example.org[192.0.2.8]", "192.0.2.8"),
    ("mail.example.org[192.0.2.8]:25", "192.0.2.8"),
    ("[192.0.2.9]", "192.0.2.9"),
    ("unknown[2001:db8::25]", "2001:db8::25"),
    ("unknown[2001:db8::25]:41000", "2001:db8::25"),
    ("unknown[2001:DB8:0:0::25]", "2001:db8::25"),
    ("mx.example.net[2001:DB8:0:0::25]:41000", "2001:db8::25"),
    ("unknown[::ffff:192.0.2.1]", "192.0.2.1"),
    ("unknown[::FFFF:192.0.2.1]:2525", "192.0.2.1"),
    ("unknown[IPv6:2001:db8::26]", "2001:db8::26"),
]


@pytest.mark.parametrize(("peer", "source"), ADDRESSES)
def test_peer_address_is_normalised(peer, source):
    log = PostfixLog()
    log.line(NOW - 60, f"connect from {peer}", pid=100)
    log.line(NOW - 20, f"disconnect from {peer} ehlo=1 quit=1 commands=2", pid=100)

    book, _ = read_log(log)

    assert sessions_of(book) == {source: (1, 40.0, 0)}
    assert book.counts["anonymous_sessions"] == 0


@pytest.mark.parametrize(
    ("peer", "bad_addresses"),
    [
        ("unknown[unknown]", 0),
        ("unknown[unknown]:0", 0),
        ("unknown[not-an-address]", 1),
        ("unknown[192.0.2.300]", 1),
        ("unknown[fe80::1%eth0]", 1),
    ],
)
def test_peer_without_an_address_counts_as_anonymous_session_never_as_source(peer, bad_addresses):
    log = PostfixLog()
    log.line(NOW - 60, f"connect from {peer}", pid=100)
    log.line(NOW - 20, f"disconnect from {peer} commands=0", pid=100)

    book, stats = read_log(log)

    assert book.sources == {}
    assert book.counts["sessions"] == 1
    assert book.counts["anonymous_sessions"] == 1
    assert stats.bad_addresses == bad_addresses
    # The session still takes a slot of the gateway's capacity.
    assert book.deltas == {NOW - 60: 1, NOW - 20: -1}


CLIENT_TEXT = [
    pytest.param(
        "NOQUEUE: reject: RCPT from unknown[192.0.2.7]: 554 5.7.1 <x@example.org>: Relay access "
        "denied; from=<a@example.org> to=<x@example.org> proto=ESMTP helo=<unknown[198.51.100.66]>",
        id="reject-with-helo",
    ),
    pytest.param("warning: connect from unknown[198.51.100.66]", id="warning-prefix"),
    pytest.param(
        "warning: non-SMTP command from unknown[192.0.2.7]: connect from unknown[198.51.100.66]",
        id="non-smtp-command",
    ),
    pytest.param(
        "improper command pipelining after CONNECT from unknown[192.0.2.7]: "
        "connect from unknown[198.51.100.66]\r",
        id="pipelining-crlf",
    ),
    pytest.param(
        "warning: Illegal address syntax from unknown[192.0.2.7] in MAIL command: "
        "<disconnect from unknown[198.51.100.66]>",
        id="illegal-address",
    ),
    pytest.param(
        "NOQUEUE: reject: CONNECT from unknown[192.0.2.7]: 554 5.7.1 Service unavailable; "
        "helo=<disconnect from unknown[198.51.100.66]>",
        id="helo-disconnect",
    ),
    pytest.param(
        "4ZxYvb1234zC9q: client=unknown[192.0.2.7], "
        "sasl_username=connect from unknown[198.51.100.66]",
        id="sasl-username",
    ),
]


@pytest.mark.parametrize("message", CLIENT_TEXT)
def test_text_a_client_sent_never_becomes_a_source(message):
    log = PostfixLog()
    log.connect(NOW - 100, "192.0.2.7", pid=100)
    log.line(NOW - 70, message, pid=100)
    log.disconnect(NOW - 40, "192.0.2.7", pid=100)

    book, stats = read_log(log)

    assert sessions_of(book) == {"192.0.2.7": (1, 60.0, 0)}
    assert book.counts["sessions"] == 1
    assert book.counts["ended_unknown"] == 0
    # connect and disconnect; the line itself is read (a queue id's client) or ignored
    assert stats.parsed + stats.ignored == 3
    assert stats.parsed in (2, 3)


def test_three_timestamp_styles_mixed_in_one_file_pair_sessions():
    log = PostfixLog()
    # Each session's connect and disconnect are written in different styles.
    log.connect(NOW - 600, "192.0.2.1", pid=101, style="syslog")
    log.disconnect(NOW - 570, "192.0.2.1", pid=101, style="rfc3339")
    log.connect(NOW - 500, "192.0.2.2", pid=102, style="maillog")
    log.disconnect(NOW - 455, "192.0.2.2", pid=102, style="syslog")
    log.connect(NOW - 400.25, "192.0.2.3", pid=103, style="rfc3339")
    log.disconnect(NOW - 350, "192.0.2.3", pid=103, style="maillog")

    book, stats = read_log(log)

    assert sessions_of(book) == {
        "192.0.2.1": (1, 30.0, 0),
        "192.0.2.2": (1, 45.0, 0),
        "192.0.2.3": (1, 50.25, 0),
    }
    assert (stats.parsed, stats.skipped) == (6, 0)


@pytest.mark.parametrize(
    ("line", "stamp", "key", "program", "message"),
    [
        (
            b"Dec  3 09:59:00 mx1 postfix/smtpd[1001]: connect from unknown[192.0.2.7]\n",
            b"Dec  3 09:59:00",
            b"mx1 postfix/smtpd[1001",
            b"postfix/smtpd",
            b"connect from unknown[192.0.2.7]",
        ),
        (
            b"Dec 03 09:59:00 mx1 postfix-out/submission/smtpd[7]: x\r\n",
            b"Dec 03 09:59:00",
            b"mx1 postfix-out/submission/smtpd[7",
            b"postfix-out/submission/smtpd",
            b"x",
        ),
        (
            b"2026-12-03T18:59:00.123456+09:00 mx2 postfix/smtps/smtpd[42]: timeout after RCPT\n",
            b"2026-12-03T18:59:00.123456+09:00",
            b"mx2 postfix/smtps/smtpd[42",
            b"postfix/smtps/smtpd",
            b"timeout after RCPT",
        ),
    ],
)
def test_split_line_finds_stamp_key_program_and_message(line, stamp, key, program, message):
    assert split_line(line) == (stamp, key, program, message)


@pytest.mark.parametrize(
    "line",
    [
        b"Dec  3 09:59:00 mx1 postfix/smtpd: connect from unknown[192.0.2.7]\n",
        b"Dec  3 09:59:00 mx1 postfix/smtpd[12a]: connect from unknown[192.0.2.7]\n",
        b"Dec  3 09:59:00 mx1 postfix/smtpd[100",
        b"Dec  3 09:59",
        b"2026-12-03T09:59:00Z",
    ],
)
def test_split_line_refuses_lines_without_a_program_and_pid(line):
    assert split_line(line) is None


def test_postscreen_dnsbl_rank_is_read_per_source_highest_wins():
    log = PostfixLog(program="postfix/postscreen")
    log.line(NOW - 50, "DNSBL rank 2 for [192.0.2.9]:52342", pid=5)
    log.line(NOW - 40, "DNSBL rank 5 for [192.0.2.9]:52343", pid=5)
    log.line(NOW - 30, "DNSBL rank 3 for [2001:DB8::9]:52344", pid=5)
    log.line(NOW - 20, "DNSBL rank 3 for [unknown]:52345", pid=5)
    ranks: dict[str, int] = {}
    stats = Stats()

    read_postfix(
        iter(log.data().splitlines(keepends=True)),
        book=SessionBook(window_start=NOW - 3600, now=NOW, thresholds=(0.0,)),
        stamp_of=TimestampParser(zone=UTC, now=NOW),
        stats=stats,
        ranks=ranks,
        addresses={},
    )

    assert ranks == {"192.0.2.9": 5, "2001:db8::9": 3}
    assert (stats.parsed, stats.skipped) == (3, 1)
