"""Cisco ESA `mail_logs` line shapes in, sessions, risks, notes and replies out."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from ansible_collections.campusnet.smtpguard.plugins.module_utils import _esa, _formats
from ansible_collections.campusnet.smtpguard.plugins.module_utils._engine import Engine
from ansible_collections.campusnet.smtpguard.plugins.module_utils._sessions import SessionBook
from ansible_collections.campusnet.smtpguard.plugins.module_utils._timestamps import (
    TimestampParser,
)
from support.logs import UTC, run_analysis, sessions_of, write_bytes
from support.make_esa import NOW, SCENARIO, STYLES, EsaLog, scenario

ROOT = Path(__file__).resolve().parents[2]
FILE_STAMP = b"Thu Dec  3 09:59:00 2026"
# The regression shape of the issue: a syslog push without a host, an interface name with a
# space (the date is moved next to the tests' check time).
PUSHED = (
    b"<166>Dec  3 09:58:20 mail_logs: Info: New SMTP ICID 3160 interface Data 1 "
    b"(198.51.100.10) address 192.0.2.70 reverse dns host unknown verified no"
)


def read_esa(data: bytes | EsaLog, *, now: float = NOW, window: float = 86400.0) -> Engine:
    """Read one log through the ESA reader into an engine whose books are finished."""
    if isinstance(data, EsaLog):
        data = data.data()
    book = SessionBook(window_start=now - window, now=now, thresholds=(0.0,))
    engine = Engine(book)
    lines = [line + b"\n" for line in data.split(b"\n")]
    if lines[-1] == b"\n":
        lines.pop()  # what follows the last newline
    _esa.read(iter(lines), engine=engine, stamp_of=TimestampParser(zone=UTC, now=now))
    book.finish()
    engine.servers.finish()
    return engine


def counters(engine: Engine) -> tuple[int, int, int, int]:
    stats = engine.stats
    assert stats.lines == stats.parsed + stats.ignored + stats.skipped + stats.after_now
    return stats.parsed, stats.ignored, stats.skipped, stats.after_now


# ---------------------------------------------------------------------------------------------
# Line shapes


@pytest.mark.parametrize("style", STYLES)
def test_a_session_pairs_from_new_smtp_icid_to_close_in_every_prefix_style(style):
    log = EsaLog(style=style)
    log.session("192.0.2.7", start=NOW - 100, duration=35, messages=1)

    engine = read_esa(log)

    assert sessions_of(engine.book) == {"192.0.2.7": (1, 35.0, 0)}
    # New SMTP, policy, close; the message's lines show the session alive.
    assert counters(engine) == (3, 5, 0, 0)


def test_the_issue_s_syslog_push_line_opens_a_session_keyed_without_host():
    engine = read_esa(PUSHED + b"\n")

    assert engine.book.counts["open_sessions"] == 1
    assert list(engine.book.open_sessions) == [b" 3160"]
    assert sessions_of(engine.book) == {"192.0.2.70": (1, 100.0, 1)}


LINES = [
    pytest.param(
        [
            b"Dec  3 09:58:00 esa1.campus.example mail_logs: Info: New SMTP ICID 5 interface "
            b"Data 1 (198.51.100.10) address 192.0.2.8 reverse dns host unknown verified no",
            b"Dec  3 09:58:40 esa1.campus.example mail_logs: Info: ICID 5 close",
        ],
        {"192.0.2.8": (1, 40.0, 0)},
        id="relayed-with-host",
    ),
    pytest.param(
        [
            b"2026-12-03T09:58:00.120+00:00 esa1 mail_logs: Info: New SMTP ICID 5 interface "
            b"Incoming (198.51.100.10) address 192.0.2.8 reverse dns host mx.example.net verified "
            b"yes",
            b"2026-12-03T09:58:40.500+00:00 esa1 mail_logs: Info: ICID 5 close",
        ],
        {"192.0.2.8": (1, 40.38, 0)},
        id="rfc3339-relay",
    ),
    pytest.param(
        # Before AsyncOS 3.8 (an interface without its address, no reverse DNS).
        [
            b"Thu Dec  3 09:58:00 2026 Info: New SMTP ICID 10292815 interface private address "
            b"192.0.2.69",
            b"Thu Dec  3 09:58:30 2026 Info: ICID 10292815 close",
        ],
        {"192.0.2.69": (1, 30.0, 0)},
        id="before-asyncos-3.8",
    ),
    pytest.param(
        # Cisco's sample of an interface named like a host.
        [
            b"Thu Dec  3 09:58:00 2026 Info: New SMTP ICID 282204970 interface mail.example.com "
            b"(198.51.100.10) address 192.0.2.45 reverse dns host unknown verified no",
            b"Thu Dec  3 09:58:04 2026 Info: ICID 282204970 close",
        ],
        {"192.0.2.45": (1, 4.0, 0)},
        id="interface-named-like-a-host",
    ),
    pytest.param(
        # "ICID N lost" marks the end; the close follows in the same second.
        [
            b"Thu Dec  3 09:58:00 2026 Info: New SMTP ICID 7 interface Data 1 (198.51.100.10) "
            b"address 192.0.2.9 reverse dns host unknown verified no",
            b"Thu Dec  3 09:58:50 2026 Info: ICID 7 lost",
            b"Thu Dec  3 09:58:50 2026 Info: ICID 7 close",
        ],
        {"192.0.2.9": (1, 50.0, 0)},
        id="lost-then-close",
    ),
]


@pytest.mark.parametrize(("lines", "sessions"), LINES)
def test_line_shapes_pair_the_right_session(lines, sessions):
    engine = read_esa(b"".join(line + b"\n" for line in lines))

    assert {
        source: (count, round(longest, 2), still_open)
        for source, (count, longest, still_open) in sessions_of(engine.book).items()
    } == sessions
    assert counters(engine)[2] == 0


# ---------------------------------------------------------------------------------------------
# Risk from the SenderBase reputation score


@pytest.mark.parametrize(
    ("policy", "risk"),
    [
        pytest.param(b"ACCEPT SG UNKNOWNLIST match sbrs[-1.0:10.0] SBRS 3.5", 32.5, id="3.5"),
        pytest.param(b"ACCEPT SG SUSPECTLIST match sbrs[-3.0:-1.0] SBRS -9.0", 95.0, id="-9.0"),
        pytest.param(b"REJECT SG BLACKLIST match sbrs[-10.0:-2.0] SBRS -10.0", 100.0, id="-10"),
        pytest.param(b"ACCEPT SG ACCEPTLIST match sbrs[0.0:10.0] SBRS 10.0", 0.0, id="10"),
        pytest.param(
            b"ACCEPT SG ACCEPTLIST match sbrs[0.0:10.0] SBRS 3.4 country United States",
            33.0,
            id="country-after",
        ),
        pytest.param(b"SBRS -2.0", 60.0, id="own-line-before-asyncos-3.8.1"),
        pytest.param(b"ACCEPT SG None match ALL SBRS None", None, id="None-is-unknown"),
        pytest.param(
            b"ACCEPT SG ALLOWED_LIST match sbrs[none] SBRS rfc1918 country not applicable",
            None,
            id="rfc1918-is-internal",
        ),
        pytest.param(
            b"ACCEPT SG None match ALL SBRS not enabled country not enabled", None, id="not-enabled"
        ),
        pytest.param(b"ACCEPT SG UNKNOWNLIST match ALL SBRS 11.0", None, id="out-of-range"),
        pytest.param(b"ACCEPT SG UNKNOWNLIST match ALL SBRS nan", None, id="nan"),
        pytest.param(b"ACCEPT SG UNKNOWNLIST match ALL SBRS", None, id="cut-before-score"),
    ],
)
def test_sbrs_on_the_policy_line_is_the_log_s_risk(policy, risk):
    engine = read_esa(
        FILE_STAMP + b" Info: New SMTP ICID 9 interface Data 1 (198.51.100.10) address "
        b"203.0.113.5 reverse dns host unknown verified no\n"
        + FILE_STAMP
        + b" Info: ICID 9 "
        + policy
        + b"\n"
    )

    assert engine.risks == ({} if risk is None else {"203.0.113.5": risk})
    assert counters(engine) == (2, 0, 0, 0)


def test_a_policy_line_of_an_icid_never_opened_scores_nobody():
    engine = read_esa(FILE_STAMP + b" Info: ICID 9 ACCEPT SG X match ALL SBRS -9.9\n")

    assert engine.risks == {}
    assert engine.book.counts["sessions"] == 0


# ---------------------------------------------------------------------------------------------
# Notes and the gateway's own answers


def test_reject_and_tcprefuse_policies_note_the_source_as_rejected():
    log = EsaLog()
    log.session("192.0.2.99", start=NOW - 90, duration=1, action="REJECT", sbrs="-9.9")
    log.session("192.0.2.98", start=NOW - 80, duration=0, action="TCPREFUSE", sbrs="-9.9")
    icid = log.session("192.0.2.97", start=NOW - 70, duration=5, sbrs="-5.0")
    log.line(
        NOW - 70,
        f"ICID {icid} Delayed HAT REJECT continuing session for recipient logging (198.51.100.10)",
    )
    log.session("192.0.2.96", start=NOW - 60, duration=2, action="ACCEPT", sbrs="-9.9")

    engine = read_esa(log)

    assert engine.notes == {
        source: {"rejected": 1} for source in ("192.0.2.99", "192.0.2.98", "192.0.2.97")
    }


@pytest.mark.parametrize("close", [None, 0, 5], ids=["no-close", "close-at-once", "close-later"])
def test_tcprefuse_ends_the_session_there_whether_or_not_a_close_follows(close):
    log = EsaLog()
    icid = log.session("192.0.2.98", start=NOW - 80, duration=None, action="TCPREFUSE")
    if close is not None:
        log.line(NOW - 80 + close, f"ICID {icid} close")
    log.session("192.0.2.1", start=NOW - 40, duration=30, icid=icid)  # the ICID again

    engine = read_esa(log)

    assert sessions_of(engine.book) == {"192.0.2.98": (1, 0.0, 0), "192.0.2.1": (1, 30.0, 0)}
    assert engine.book.counts["start_unknown"] == 0
    assert engine.book.counts["ended_unknown"] == 0


def test_tcprefuse_of_an_icid_never_opened_notes_nobody_and_opens_nothing():
    engine = read_esa(
        FILE_STAMP + b" Info: ICID 0 TCPREFUSE SG BLACKLIST match sbrs[-10.0:-0.5] SBRS -9.9\n"
    )

    assert engine.notes == {}
    assert engine.book.counts["sessions"] == 0
    assert counters(engine) == (1, 0, 0, 0)


def test_a_connection_limit_is_noted_and_counted_as_a_421_the_gateway_answered():
    log = EsaLog()
    icid = log.session("203.0.113.77", start=NOW - 30, duration=None, sbrs="1.2")
    log.line(
        NOW - 30,
        "System limit reached: connection limit for IP 203.0.113.77 on "
        f"listener Incoming ICID {icid}: max: 3",
        level="Warning",
    )
    log.line(NOW - 30, f"ICID {icid} Receiving Failed: Connection limit exceeded")
    log.line(NOW - 30, f"ICID {icid} close")

    engine = read_esa(log)

    assert engine.notes == {"203.0.113.77": {"connection_limit": 1}}
    assert engine.replies == {"203.0.113.77": {"421": 1, "4xx": 1}}
    assert engine.server_replies == {}
    assert sessions_of(engine.book) == {"203.0.113.77": (1, 0.0, 0)}


def test_recipients_over_the_rate_limit_count_as_452_answers_to_the_source():
    log = EsaLog()
    icid = log.session("192.0.2.50", start=NOW - 30, duration=10)
    log.line(
        NOW - 29, f"MID 81 ICID {icid} RID 0 To: <a@campus.example> Rejected by Receiving Control"
    )
    log.line(NOW - 29, f"MID 81 ICID {icid} RID 1 To: <Rejected by Receiving Control@x>")

    engine = read_esa(log)

    assert engine.replies == {"192.0.2.50": {"421": 0, "4xx": 1}}


# ---------------------------------------------------------------------------------------------
# Delivery connections to the internal servers


def test_delivery_connections_are_the_servers_sessions_and_their_4xx_count_per_server():
    log = EsaLog()
    icid = log.session("192.0.2.10", start=NOW - 100, duration=10)
    mid = log.message(NOW - 99, icid=icid)
    log.delivery("198.51.100.25", start=NOW - 95, duration=40, mids=[mid], delayed="421")
    log.delivery("2001:DB8:0:0::25", start=NOW - 30, duration=None, mids=[mid], delayed="450")
    log.delivery("198.51.100.26", start=NOW - 20, duration=5, mids=[mid], delayed="550")

    engine = read_esa(log)

    assert sessions_of(engine.servers) == {
        "198.51.100.25": (1, 40.0, 0),
        "2001:db8::25": (1, 30.0, 1),
        "198.51.100.26": (1, 5.0, 0),
    }
    assert engine.server_replies == {
        "198.51.100.25": {"421": 1, "4xx": 1},
        "2001:db8::25": {"421": 0, "4xx": 1},
    }
    # What a server answered the gateway is not what the gateway answered the client.
    assert engine.replies == {}
    assert sessions_of(engine.book) == {"192.0.2.10": (1, 10.0, 0)}


@pytest.mark.parametrize(
    ("line", "replies"),
    [
        pytest.param(
            b"Delayed: DCID 5 MID 4 to RID 0 - 4.1.0 - Unknown address error ('466', "
            b"['Mailbox temporarily full.'])[]",
            {"4xx": 1, "421": 0},
            id="asyncos-user-guide",
        ),
        pytest.param(
            b"Delayed: DCID: 5 Message 10800 to 0 - 4.4.0 - Other network problem "
            b"('000', ['[Errno 54] Connection reset by peer']) []",
            None,
            id="network-error-before-asyncos-4",
        ),
        pytest.param(
            b"Delayed: DCID 5 MID 4 From: <('421', [@example.net> To: <b@example.com> "
            b"RID 0 - 4.3.2 - Not accepting messages ('452', ['try later'])",
            {"4xx": 1, "421": 0},
            id="quoted-code-in-the-sender",
        ),
    ],
)
def test_delayed_lines_read_the_server_s_reply_code(line, replies):
    log = EsaLog()
    log.line(NOW - 60, "New SMTP DCID 5 interface 198.51.100.10 address 198.51.100.25 port 25")
    log.raw(NOW - 59, FILE_STAMP.decode() + " Info: " + line.decode())

    engine = read_esa(log)

    assert engine.server_replies == ({} if replies is None else {"198.51.100.25": replies})


# ---------------------------------------------------------------------------------------------
# One test per kind of fault, each with the right per-session result

OPEN = (
    FILE_STAMP + b" Info: New SMTP ICID 11 interface Data 1 (198.51.100.10) address "
    b"192.0.2.11 reverse dns host unknown verified no"
)
CLOSE = b"Thu Dec  3 09:59:30 2026 Info: ICID 11 close"
JUNK = bytes((index * 37 + 11) % 256 for index in range(600)).replace(b"\n", b"")

# (lines between OPEN and CLOSE, (parsed, ignored, skipped), sessions per source)
FAULTS = [
    pytest.param([JUNK], (0, 0, 1), {"192.0.2.11": (1, 30.0, 0)}, id="corrupt-line"),
    pytest.param(
        [b"\x00" * 4096 + OPEN],
        (0, 0, 1),
        {"192.0.2.11": (1, 30.0, 0)},
        id="nul-block-before-a-line",
    ),
    pytest.param(
        [
            FILE_STAMP + b" Info: New SMTP ICID 12 interface Data 1 (198.51.100.10) "
            b"address 192.0.2.1"
        ],
        (0, 0, 1),
        {"192.0.2.11": (1, 30.0, 0)},
        id="truncated-in-the-address",
    ),
    pytest.param(
        [b"Thu Dec  3 09:5"], (0, 0, 1), {"192.0.2.11": (1, 30.0, 0)}, id="truncated-stamp"
    ),
    pytest.param(
        [FILE_STAMP + b" Info: ICID"],
        (0, 1, 0),
        {"192.0.2.11": (1, 30.0, 0)},
        id="truncated-after-icid",
    ),
    pytest.param(
        [b"Thu Dec 32 09:59:10 2026 Info: ICID 11 close"],
        (0, 0, 1),
        {"192.0.2.11": (1, 30.0, 0)},
        id="impossible-date",
    ),
    pytest.param(
        [
            FILE_STAMP + b" Info: ICID 99 lost",
            FILE_STAMP + b" Info: ICID 99 ACCEPT SG X match ALL SBRS -9.0",
        ],
        (2, 0, 0),
        {"192.0.2.11": (1, 30.0, 0)},
        id="unknown-id",
    ),
    pytest.param(
        [FILE_STAMP + b" Info: ICID 98 close"],
        (1, 0, 0),
        {"192.0.2.11": (1, 30.0, 0)},
        id="close-without-open",
    ),
    pytest.param(
        [
            FILE_STAMP + b" Info: New SMTP ICID 13 interface Data 1 (198.51.100.10) "
            b"address 192.0.2.13 reverse dns host unknown verified no"
        ],
        (1, 0, 0),
        {"192.0.2.11": (1, 30.0, 0), "192.0.2.13": (1, 60.0, 1)},
        id="open-without-close",
    ),
    pytest.param(
        [
            b"Thu Dec  3 09:59:20 2026 Info: ICID 11 TLS success protocol TLSv1.2",
            b"Thu Dec  3 09:59:20 2026 Info: New SMTP ICID 11 interface Data 1 "
            b"(198.51.100.10) address 192.0.2.14 reverse dns host unknown verified no",
        ],
        (1, 1, 0),
        {"192.0.2.11": (1, 20.0, 0), "192.0.2.14": (1, 10.0, 0)},
        id="id-reuse",
    ),
    pytest.param(
        [
            FILE_STAMP + b" Info: New SMTP ICID 19 interface Data 1 (198.51.100.10) "
            b"address 192.0.2.19 reverse dns host unknown verified no",
            b"Thu Dec  3 09:58:30 2026 Info: ICID 19 close",
        ],
        (2, 0, 0),
        {"192.0.2.11": (1, 30.0, 0), "192.0.2.19": (1, 0.0, 0)},
        id="clock-going-back",
    ),
    pytest.param(
        [
            FILE_STAMP + b" Info: New SMTP ICID 15 interface Data 1 (198.51.100.10) "
            b"address 2001:DB8:0:0::25 reverse dns host unknown verified no",
            b"Thu Dec  3 09:59:10 2026 Info: ICID 15 close",
        ],
        (2, 0, 0),
        {"192.0.2.11": (1, 30.0, 0), "2001:db8::25": (1, 10.0, 0)},
        id="ipv6",
    ),
    pytest.param(
        [
            FILE_STAMP + b" Info: New SMTP ICID 16 interface Data 1 (198.51.100.10) "
            b"address ::ffff:192.0.2.16 reverse dns host unknown verified no",
            b"Thu Dec  3 09:59:10 2026 Info: ICID 16 close",
        ],
        (2, 0, 0),
        {"192.0.2.11": (1, 30.0, 0), "192.0.2.16": (1, 10.0, 0)},
        id="ipv4-mapped",
    ),
    pytest.param(
        [
            FILE_STAMP + b" Info: New SMTP ICID 17 interface Data 1 (198.51.100.10) "
            b"address unknown reverse dns host unknown verified no",
            b"Thu Dec  3 09:59:10 2026 Info: ICID 17 close",
        ],
        (2, 0, 0),
        {"192.0.2.11": (1, 30.0, 0)},
        id="unknown-address",
    ),
    pytest.param(
        [
            FILE_STAMP + b" Info: MID 5 ICID 11 Subject '" + b"x" * 20_000 + b"'",
            FILE_STAMP + b" Info: ICID 11 " + JUNK * 34,
        ],
        (0, 2, 0),
        {"192.0.2.11": (1, 30.0, 0)},
        id="huge-lines",
    ),
    pytest.param(
        [
            FILE_STAMP + b" Info: New SMTP ICID 18 interface Data 1 (198.51.100.10) "
            b"address 192.0.2.18 reverse dns host h\xff\xfe.example verified no",
            FILE_STAMP + b" Info: MID 6 ICID 18 From: <\xe9t\xe9@example.net>",
            b"Thu Dec  3 09:59:10 2026 Info: ICID 18 close",
        ],
        (2, 1, 0),
        {"192.0.2.11": (1, 30.0, 0), "192.0.2.18": (1, 10.0, 0)},
        id="non-utf8",
    ),
    pytest.param([b"", b"\r"], (0, 0, 2), {"192.0.2.11": (1, 30.0, 0)}, id="empty-lines"),
]


@pytest.mark.parametrize(("middle", "counts", "sessions"), FAULTS)
def test_each_fault_is_counted_and_the_sessions_stay_right(middle, counts, sessions):
    engine = read_esa(b"".join(line + b"\n" for line in [OPEN, *middle, CLOSE]), now=NOW)

    parsed, ignored, skipped, after_now = counters(engine)
    assert (parsed - 2, ignored, skipped, after_now) == (*counts, 0)
    assert sessions_of(engine.book) == sessions


def test_a_close_without_open_lasts_from_the_first_line_read():
    engine = read_esa(FILE_STAMP + b" Info: Begin Logfile\n" + CLOSE + b"\n")

    assert engine.book.counts["start_unknown"] == 1
    assert engine.book.counts["anonymous_sessions"] == 1
    assert engine.book.counts["sessions"] == 1


def test_an_unknown_address_is_an_anonymous_session_and_no_bad_address():
    engine = read_esa(OPEN.replace(b"192.0.2.11", b"unknown") + b"\n" + CLOSE + b"\n")

    assert engine.book.counts["anonymous_sessions"] == 1
    assert engine.stats.bad_addresses == 0


def test_a_name_where_the_address_belongs_is_a_bad_address():
    engine = read_esa(OPEN.replace(b"192.0.2.11", b"mx.example.net") + b"\n" + CLOSE + b"\n")

    assert engine.stats.bad_addresses == 1
    assert engine.book.counts["anonymous_sessions"] == 1


def test_lines_after_now_are_counted_and_not_fed():
    engine = read_esa(OPEN + b"\n" + CLOSE + b"\n", now=NOW - 45)

    assert counters(engine) == (1, 0, 0, 1)
    assert sessions_of(engine.book) == {"192.0.2.11": (1, 15.0, 1)}


# ---------------------------------------------------------------------------------------------
# Text a client chose, several appliances, logger folds


def test_text_a_client_chose_never_becomes_a_source_or_ends_a_session():
    log = EsaLog()
    icid = log.session(
        "192.0.2.20",
        start=NOW - 100,
        duration=None,
        ptr="x address 203.0.113.66 reverse dns host y",
    )
    log.line(NOW - 90, f"MID 7 ICID {icid} From: <ICID {icid} close>")
    log.line(NOW - 90, f"MID 7 Subject 'ICID {icid} close'")
    log.line(
        NOW - 80,
        f"MID 7 ICID {icid} RID 0 To: <New SMTP ICID 1 interface a (b) address "
        "203.0.113.67 reverse dns host c verified no>",
    )

    engine = read_esa(log)

    assert sessions_of(engine.book) == {"192.0.2.20": (1, 100.0, 1)}


def test_an_address_in_the_reverse_dns_name_is_never_read():
    engine = read_esa(
        FILE_STAMP + b" Info: New SMTP ICID 5 interface Data 1 address 192.0.2.21 reverse dns "
        b"host a) address 203.0.113.66 reverse dns host b verified no\n"
        + FILE_STAMP
        + b" Info: New SMTP ICID 6 interface Data 1 address unknown reverse dns "
        b"host x address 203.0.113.67 verified no\n"
    )

    assert sessions_of(engine.book) == {"192.0.2.21": (1, 60.0, 1)}
    assert engine.book.counts["anonymous_sessions"] == 1


def test_several_appliances_in_one_file_stay_apart_by_host():
    log = EsaLog(style="relay")
    log.session("192.0.2.30", start=NOW - 100, duration=60, icid=500, host="esa1")
    log.session("192.0.2.31", start=NOW - 90, duration=20, icid=500, host="esa2")

    engine = read_esa(log)

    assert sessions_of(engine.book) == {"192.0.2.30": (1, 60.0, 0), "192.0.2.31": (1, 20.0, 0)}
    assert engine.book.counts["ended_unknown"] == 0


def test_message_repeated_folds_of_rsyslog_are_expanded():
    log = EsaLog(style="relay")
    log.session("192.0.2.40", start=NOW - 100, duration=10, icid=600)
    log.raw(
        NOW - 95,
        "Dec  3 09:58:25 esa1 mail_logs: message repeated 2 times: [ Info: ICID "
        "600 ACCEPT SG X match ALL SBRS -9.0]",
    )

    engine = read_esa(log)

    assert engine.risks == {"192.0.2.40": 95.0}
    assert engine.stats.lines == 5


# ---------------------------------------------------------------------------------------------
# Detection: this reader claims ESA logs and nothing else, and no other reader claims them


def _head(path: Path) -> list[bytes]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        return [line for _, line in zip(range(200), handle, strict=False)]


OTHER_LOGS = sorted(
    path
    for path in [
        *(ROOT / "demo" / "sample").glob("mail.log*"),
        *(ROOT / "tests" / "data" / "formats").glob("*/*"),
    ]
    if path.parent.name != "cisco_esa" and not path.name.startswith(("answer", "risk", "README"))
)


@pytest.mark.parametrize("style", STYLES)
def test_auto_detection_picks_cisco_esa_in_every_style(style):
    log = EsaLog(style=style)
    log.session("192.0.2.7", start=NOW - 100, duration=35)

    assert _formats.detect(log.data().splitlines(keepends=True)) == "cisco_esa"


def test_auto_detection_picks_cisco_esa_for_the_scenario_and_no_other_reader_claims_it():
    head = _head(SCENARIO / "mail_logs")

    assert _formats.detect(head) == "cisco_esa"
    assert [
        name
        for name, reader in _formats.READERS.items()
        if name != "cisco_esa" and reader.looks_like(head)
    ] == []


@pytest.mark.parametrize("path", OTHER_LOGS, ids=lambda path: f"{path.parent.name}/{path.name}")
def test_the_esa_reader_claims_no_other_format_s_log(path):
    assert not _esa.looks_like(_head(path))


def test_the_esa_reader_claims_no_postfix_line_that_names_an_icid():
    lines = [
        b"Dec  3 09:58:20 mx1 postfix/smtpd[100]: connect from unknown[192.0.2.1]\n",
        b"Dec  3 09:58:20 mx1 postfix/cleanup[101]: 3F1A2B4C5D: Info: ICID 5 close\n",
        b"Dec  3 09:58:20 mx1 kernel: Info: New SMTP ICID 5\n",
    ]

    assert not _esa.looks_like(lines[:2])
    assert _formats.detect(lines[:2]) == "postfix"


# ---------------------------------------------------------------------------------------------
# The scenario, end to end through analyze()


def _answer() -> dict:
    return json.loads((SCENARIO / "answer.json").read_text())


def test_the_scenario_file_is_what_its_generator_writes():
    log, answer = scenario()

    assert (SCENARIO / "mail_logs").read_bytes() == log.data()
    assert _answer() == answer


def test_the_scenario_gives_its_known_answer_through_analyze():
    answer = _answer()

    result = run_analysis(
        SCENARIO / "mail_logs",
        now=answer["now"],
        window=answer["window"],
        capacity=answer["capacity"],
        rules=None,
        force=False,
        risk_source="log",
        servers=[answer["server"]["address"]],
        format="auto",
    )

    assert result["stats"]["format"] == "cisco_esa"
    assert result["triggered"] is True and result["alert"] is False
    assert {
        c["ip"]: {"rule": c["rule"], "rules": c["rules"], "sessions": c["sessions"]}
        for c in result["candidates"]
    } == answer["candidates"]
    # The answer's own figures, read as a person checks them.
    assert {c["ip"]: c["rule"] for c in result["candidates"]} == {
        "203.0.113.9": "cond1",
        "198.51.100.7": "cond2",
        "192.0.2.200": "cond3",
    }
    occupancy = result["occupancy"]
    assert {key: occupancy[key] for key in ("current_sessions", "peak_sessions")} == answer[
        "occupancy"
    ]
    assert occupancy["current"] == 100.0 * answer["occupancy"]["current_sessions"] / 40
    assert result["stats"]["sessions"] == answer["sessions"]
    stats = result["stats"]
    assert (stats["skipped"], stats["bad_addresses"], stats["start_unknown"]) == (0, 0, 0)
    (server,) = result["servers"]
    assert {
        key: server[key] for key in ("address", "sessions", "current_sessions", "replies_421")
    } == answer["server"]


def test_the_scenario_s_risks_notes_and_replies_are_read():
    answer = _answer()

    engine = read_esa((SCENARIO / "mail_logs").read_bytes(), window=answer["window"])

    assert engine.risks == answer["risks"]
    assert engine.notes == answer["notes"]
    assert engine.replies == {"203.0.113.77": {"421": 1, "4xx": 1}}
    assert engine.server_replies == {answer["server"]["address"]: {"421": 1, "4xx": 1}}


def test_the_scenario_read_in_two_runs_with_state_path_equals_one_full_read(tmp_path):
    answer = _answer()
    lines = (SCENARIO / "mail_logs").read_bytes().splitlines(keepends=True)
    options = {
        "now": answer["now"],
        "window": answer["window"],
        "capacity": answer["capacity"],
        "rules": None,
        "force": True,
        "risk_source": "log",
        "format": "cisco_esa",
    }
    full = run_analysis(SCENARIO / "mail_logs", **options)

    # The first run ends in the middle of open sessions (the slow post, the delivery).
    path = write_bytes(tmp_path / "mail_logs", b"".join(lines[: len(lines) - 30]))
    state = tmp_path / "state.json"
    run_analysis(path, state_path=str(state), **options)
    with path.open("ab") as handle:
        handle.write(b"".join(lines[len(lines) - 30 :]))
    resumed = run_analysis(path, state_path=str(state), **options)

    assert resumed["state"]["resumed"] is True
    assert resumed["candidates"] == full["candidates"]
    assert resumed["occupancy"] == full["occupancy"]
    assert {key: resumed["stats"][key] for key in ("lines", "parsed", "ignored", "sessions")} == {
        key: full["stats"][key] for key in ("lines", "parsed", "ignored", "sessions")
    }


def test_a_close_after_tcprefuse_in_the_next_run_is_no_session_of_its_own(tmp_path):
    log = EsaLog()
    icid = log.session("192.0.2.98", start=NOW - 80, duration=None, action="TCPREFUSE")
    log.session("192.0.2.7", start=NOW - 70, duration=None)
    path = log.write(tmp_path / "mail_logs")
    state = tmp_path / "state.json"
    run_analysis(path, state_path=str(state), format="cisco_esa")
    with path.open("a") as handle:
        handle.write(f"Thu Dec  3 09:58:50 2026 Info: ICID {icid} close\n")

    resumed = run_analysis(path, state_path=str(state), format="cisco_esa")

    assert resumed["state"]["resumed"] is True
    assert (resumed["stats"]["sessions"], resumed["stats"]["start_unknown"]) == (2, 0)
    assert {c["ip"]: c["longest_session"] for c in resumed["candidates"]} == {
        "192.0.2.98": 0,
        "192.0.2.7": 70,
    }


def test_a_server_421_to_a_message_counts_for_the_source_of_the_message():
    lines = b"".join(
        line.encode() + b"\n"
        for line in (
            "Thu Dec  3 09:43:20 2026 Info: New SMTP ICID 824264 interface Data 1 "
            "(198.51.100.10) address 192.0.2.11 reverse dns host unknown verified no",
            "Thu Dec  3 09:43:21 2026 Info: Start MID 26923 ICID 824264",
            "Thu Dec  3 09:43:22 2026 Info: New SMTP DCID 9106 interface 198.51.100.10 "
            "address 10.0.0.5 port 25",
            "Thu Dec  3 09:43:23 2026 Info: Delayed: DCID 9106 MID 26923 From: <a@example.net> "
            "To: <b@campus.example> RID 0 - 4.3.2 - Not accepting messages at this time "
            "('421', ['421 4.3.2 try again later'])",
            "Thu Dec  3 09:43:24 2026 Info: Start MID 26924 ICID 824299",  # an ICID never opened
            "Thu Dec  3 09:43:25 2026 Info: Delayed: DCID 9106 MID 26924 From: <a@example.net> "
            "To: <b@campus.example> RID 0 - 4.3.2 - Not accepting messages at this time "
            "('421', ['421 4.3.2 try again later'])",
        )
    )

    engine = read_esa(lines)

    assert engine.notes == {"192.0.2.11": {"server_421": 1}}
    assert engine.server_replies == {"10.0.0.5": {"421": 2, "4xx": 2}}


# ---------------------------------------------------------------------------------------------
# Review findings: a lost connection ends its session, a close read twice counts once, a score
# out of range is counted


@pytest.mark.parametrize(
    "after",
    [[], [b"Thu Dec  3 09:59:45 2026 Info: ICID 11 close"]],
    ids=["no-close", "close-later"],
)
def test_a_lost_connection_ends_its_session_there_whether_or_not_a_close_follows(after):
    lost = b"Thu Dec  3 09:59:20 2026 Info: ICID 11 lost"
    later = b"Thu Dec  3 09:59:50 2026 Info: ICID 12 close"

    engine = read_esa(b"".join(line + b"\n" for line in [OPEN, lost, *after, later]))

    assert sessions_of(engine.book) == {"192.0.2.11": (1, 20.0, 0)}
    assert engine.book.counts["open_sessions"] == 0
    assert engine.book.counts["sessions"] == 2  # and ICID 12's close, whose start was not read


def test_a_close_without_open_read_twice_counts_once():
    engine = read_esa(FILE_STAMP + b" Info: Begin Logfile\n" + CLOSE + b"\n" + CLOSE + b"\n")

    assert engine.book.counts["sessions"] == 1
    assert engine.book.counts["start_unknown"] == 1
    assert engine.book.counts["repeated_lines"] == 1


@pytest.mark.parametrize(
    ("score", "bad"),
    [(b"12.5", 1), (b"abc", 1), (b"nan", 1), (b"None", 0), (b"rfc1918", 0), (b"not enabled", 0)],
)
def test_a_sbrs_out_of_range_is_counted_as_a_bad_field_and_gives_no_risk(score, bad):
    policy = FILE_STAMP + b" Info: ICID 11 ACCEPT SG UNKNOWNLIST match ALL SBRS " + score

    engine = read_esa(b"".join(line + b"\n" for line in [OPEN, policy, CLOSE]))

    assert engine.risks == {}
    assert engine.stats.bad_fields == bad
