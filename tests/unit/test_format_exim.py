"""Exim main log reader: each line shape and each kind of fault, with its per-session result.

Line shapes follow the Exim specification, chapter "Log files" (log_selector smtp_connection,
smtp_no_mail, pid, incoming_port, incoming_interface, millisec, deliver_time) and the daemon's
source, which writes the start line before forking the serving process.
"""

from __future__ import annotations

from datetime import UTC
from pathlib import Path

import pytest

from ansible_collections.campusnet.smtpguard.plugins.module_utils import _exim, _formats
from ansible_collections.campusnet.smtpguard.plugins.module_utils._analyze import (
    Settings,
    analyze,
)
from ansible_collections.campusnet.smtpguard.plugins.module_utils._engine import Engine
from ansible_collections.campusnet.smtpguard.plugins.module_utils._sessions import SessionBook
from ansible_collections.campusnet.smtpguard.plugins.module_utils._timestamps import (
    TimestampParser,
)
from support.logs import NOW, run_analysis, sessions_of, write_bytes

DATA = Path(__file__).resolve().parent.parent / "data" / "formats"
ANY = {"name": "any", "min_duration": 0, "min_sessions": 1, "min_risk": 0}
OPEN = b"2026-12-03 09:50:00 [1200] SMTP connection from [192.0.2.9]:1418 I=[198.51.100.1]:25 " \
       b"(TCP/IP connection count = 1)"  # fmt: skip


def feed(*lines: bytes) -> Engine:
    book = SessionBook(window_start=NOW - 86400, now=NOW, thresholds=(0.0,))
    engine = Engine(book)
    data = b"".join(line + b"\n" for line in lines)
    _exim.read(iter(data.splitlines(keepends=True)), engine=engine,
               stamp_of=TimestampParser(zone=UTC, now=NOW))  # fmt: skip
    book.finish()
    return engine


# (lines, {source: (sessions, longest, open)}, (parsed, ignored, skipped))
CASES = [
    pytest.param(
        [
            b"2026-12-03 09:52:42 [18643] no MAIL in SMTP connection from host.example.net (SERVER)"
            b" [192.0.2.85]:1418 I=[198.51.100.1]:25 D=2m42s C=QUIT"
        ],
        {"192.0.2.85": (1, 162.0, 0)},
        (1, 0, 0),
        id="regression-no-mail-duration-with-units",
    ),
    pytest.param(
        [
            OPEN,
            b"2026-12-03 09:51:00 [30001] SMTP connection from h.example.net ([192.0.2.9])"
            b" [192.0.2.9]:1418 I=[198.51.100.1]:25 closed by QUIT",
        ],
        {"192.0.2.9": (1, 60.0, 0)},
        (2, 0, 0),
        id="start-by-daemon-end-by-child-pid",
    ),
    pytest.param(
        [
            OPEN.replace(b"[1200] ", b""),
            b"2026-12-03 09:50:07 SMTP connection from [192.0.2.9]:"
            b"1418 I=[198.51.100.1]:25 Ci=30001 lost",
        ],
        {"192.0.2.9": (1, 7.0, 0)},
        (2, 0, 0),
        id="no-pid-connection-id-lost",
    ),
    pytest.param(
        [
            OPEN,
            b"2026-12-03 09:55:00 [30001] SMTP command timeout on connection from x "
            b"(spoof [203.0.113.66]) [192.0.2.9]:1418 I=[198.51.100.1]:25 D=5m",
        ],
        {"192.0.2.9": (1, 300.0, 0)},
        (2, 0, 0),
        id="helo-address-never-a-source",
    ),
    pytest.param(
        [
            b"2026-12-03 09:50:00.250 +0100 [7] SMTP connection from [2001:DB8:0:0::25]:999 "
            b"(TCP/IP connection count = 2)",
            b"2026-12-03 09:50:01.750 +0100 [8] SMTP connection from [2001:DB8:0:0::25]:999 "
            b"D=1.5s closed by QUIT",
        ],
        {"2001:db8::25": (1, 1.5, 0)},
        (2, 0, 0),
        id="ipv6-millisec-zone",
    ),
    pytest.param(
        [
            b"2026-12-03 09:50:00 SMTP connection from [192.0.2.5] (TCP/IP connection count = 1)",
            b"2026-12-03 09:50:02 SMTP connection from [192.0.2.5] (TCP/IP connection count = 2)",
            b"2026-12-03 09:50:04 SMTP connection from [192.0.2.5] closed by QUIT",
            b"2026-12-03 09:50:05 SMTP connection from [192.0.2.5] lost",
        ],
        {"192.0.2.5": (2, 4.0, 0)},
        (4, 0, 0),
        id="no-port-oldest-first",
    ),
    pytest.param([OPEN], {"192.0.2.9": (1, 600.0, 1)}, (1, 0, 0), id="open-without-close"),
    pytest.param(
        [
            b"2026-12-03 09:40:00 [1] Start queue run: pid=1",
            b"2026-12-03 09:45:00 [2] SMTP connection from [192.0.2.7]:5 lost",
        ],
        {"192.0.2.7": (1, 300.0, 0)},
        (1, 1, 0),
        id="close-without-open-from-file-start",
    ),
    pytest.param(
        [
            OPEN,
            b"2026-12-03 09:50:03 [2] SMTP connection from [192.0.2.9]:1418 closed by QUIT",
            OPEN.replace(b"09:50:00", b"09:50:10"),
            b"2026-12-03 09:50:30 [3] SMTP connection from [192.0.2.9]:1418 closed by QUIT",
        ],
        {"192.0.2.9": (2, 20.0, 0)},
        (4, 0, 0),
        id="port-reused-after-close",
    ),
    pytest.param(
        [OPEN, b"2026-12-03 09:49:00 [2] SMTP connection from [192.0.2.9]:1418 closed by QUIT"],
        {"192.0.2.9": (1, 0.0, 0)},
        (2, 0, 0),
        id="clock-going-back",
    ),
    pytest.param(
        [b"2026-12-03 09:50:00 [1] SMTP connection from [unknown]:1 (TCP/IP connection count = 1)"],
        {},
        (1, 0, 0),
        id="unknown-address",
    ),
    pytest.param([OPEN[:60]], {}, (0, 0, 1), id="truncated-line"),
    pytest.param([b"\x00\x17garbage", b"2026-12-03 09:5"], {}, (0, 0, 2), id="corrupt-lines"),
    pytest.param(
        [
            OPEN,
            b"2026-12-03 09:50:09 [2] SMTP connection from h\xff\xfe (\xe9t\xe9) "
            b"[192.0.2.9]:1418 closed by QUIT",
        ],
        {"192.0.2.9": (1, 9.0, 0)},
        (2, 0, 0),
        id="non-utf8",
    ),
    pytest.param(
        [
            OPEN,
            b"2026-12-03 09:50:02 [2] H=(" + b"x" * 200_000 + b") [192.0.2.9]:1418 "
            b"temporarily rejected RCPT <u@campus.example>: greylisted",
        ],
        {"192.0.2.9": (1, 600.0, 1)},
        (2, 0, 0),
        id="huge-line",
    ),
    pytest.param(
        [b"2026-12-03 09:50:00 [1] SMTP connection from [192.0.2.300]:1 closed by QUIT"],
        {},
        (0, 0, 1),
        id="not-an-address",
    ),
    pytest.param(
        [
            b"Dec  3 09:50:00 mx1 exim[1200]: 2026-12-03 09:50:00 SMTP connection from [192.0.2.3]:"
            b"7 (TCP/IP connection count = 1)",
            b"Dec  3 09:50:04 mx1 exim[30001]: 2026-12-03 09:50:04 SMTP connection from "
            b"[192.0.2.3]:7 closed by QUIT",
            b"Dec  3 09:50:04 mx1 kernel: unrelated",
        ],
        {"192.0.2.3": (1, 4.0, 0)},
        (2, 1, 0),
        id="through-syslog",
    ),
]


@pytest.mark.parametrize(("lines", "expected", "counts"), CASES)
def test_line_shapes_give_the_right_sessions(lines, expected, counts):
    engine = feed(*lines)

    assert sessions_of(engine.book) == expected
    stats = engine.stats
    assert (stats.parsed, stats.ignored, stats.skipped) == counts
    assert stats.lines == stats.parsed + stats.ignored + stats.skipped + stats.after_now


def test_sync_error_notes_pregreet_and_refusals_count_421():
    engine = feed(
        b"2026-12-03 09:50:00 [1] SMTP protocol synchronization error (input sent without "
        b'waiting for greeting): rejected connection from H=[192.0.2.63]:62873 input="EHLO '
        b'[203.0.113.1]"',
        b"2026-12-03 09:50:01 [2] Connection from [192.0.2.64]:4000 I=[198.51.100.1]:25 refused:"
        b" too many connections",
        b"2026-12-03 09:50:02 [3] SMTP call from (x) [192.0.2.65]:9 dropped: too many "
        b'unrecognized commands (last command was "[203.0.113.2]")',
    )

    assert engine.notes["192.0.2.63"] == {"rejected": 1, "pregreet": 1}
    assert engine.replies["192.0.2.64"] == {"421": 1, "4xx": 1}
    assert engine.notes["192.0.2.64"] == {"connection_limit": 1, "rejected": 1}
    assert engine.notes["192.0.2.65"] == {"rejected": 1}
    assert "203.0.113.1" not in engine.notes and "203.0.113.2" not in engine.notes


def test_deliveries_to_internal_servers():
    engine = feed(
        b"2026-12-03 09:50:05 [2] 1v0000-000000000AB-abcd => u@campus.example R=campus "
        b'T=remote_smtp H=mx1.campus.example [10.0.0.5] C="250 OK" DT=4s',
        b"2026-12-03 09:50:06 [3] 1v0001-000000000AC-abcd == u@campus.example R=campus "
        b"T=remote_smtp defer (-46) H=mx2.campus.example [10.0.0.6]: SMTP error from remote "
        b"mail server after RCPT TO:<u@campus.example>: 421 4.3.2 busy",
    )
    engine.servers.finish()

    assert sessions_of(engine.servers) == {"10.0.0.5": (1, 4.0, 0)}
    assert engine.server_replies == {"10.0.0.6": {"421": 1, "4xx": 1}}


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        (b"2m42s", 162.0),
        (b"1h2m3s", 3723.0),
        (b"0.125s", 0.125),
        (b"3d", 259200.0),
        (b"", None),
        (b"2x", None),
    ],
)
def test_durations_with_units(text, seconds):
    assert _exim.parse_duration(text) == seconds


def test_detection_picks_exim_and_exim_claims_no_other_log():
    exim = (DATA / "exim" / "mainlog").read_bytes().splitlines(keepends=True)[:200]
    assert _formats.detect(exim) == "exim"

    others = [path for path in DATA.rglob("*") if path.is_file() and "exim" not in path.parts]
    others += [path for path in (DATA.parent.parent.parent / "demo" / "sample").rglob("*.log*")]
    for path in others:
        head = path.read_bytes().splitlines(keepends=True)[:200]
        assert not _exim.looks_like(head), path


SYNC = b"2026-12-03 09:50:04 [30001] SMTP protocol synchronization error (next input sent too " \
       b"soon: pipelining was not advertised): rejected "  # fmt: skip

# A synchronization error quotes the command the client sent before Exim's own H=: (the text
# after "rejected ", the session of OPEN's client, the notes per source, parsed/skipped).
SYNC_ERRORS = [
    pytest.param(
        b'"HELO x [192.0.2.77]" H=[192.0.2.9]:1418 I=[198.51.100.1]:25 next input="QUIT\\r\\n"',
        {"192.0.2.9": (1, 4.0, 0)},
        {"192.0.2.9": {"rejected": 1}},
        (2, 0),
        id="address-in-the-command",
    ),
    pytest.param(
        b'"EHLO from [203.0.113.8]" H=mail.example.net (x) [192.0.2.9]:1418 next input="QUIT"',
        {"192.0.2.9": (1, 4.0, 0)},
        {"192.0.2.9": {"rejected": 1}},
        (2, 0),
        id="from-and-address-in-the-command",
    ),
    pytest.param(
        b'"x\\" H=[203.0.113.5]:1 next input=\\"" H=[192.0.2.9]:1418 next input="QUIT"',
        {"192.0.2.9": (1, 4.0, 0)},
        {"192.0.2.9": {"rejected": 1}},
        (2, 0),
        id="imitated-h-field-escaped-by-exim-4.98",
    ),
    pytest.param(
        b'"x" H=[203.0.113.5]:1 next input="" H=[192.0.2.9]:1418 next input="QUIT"',
        {"192.0.2.9": (1, 600.0, 1)},
        {},
        (1, 1),
        id="imitated-h-field-unescaped-is-skipped",
    ),
    pytest.param(
        b'"BDAT 100" H=[192.0.2.9]:1418 I=[198.51.100.1]:25 next input="RSET\\r\\n"',
        {"192.0.2.9": (1, 600.0, 1)},
        {"192.0.2.9": {"rejected": 1}},
        (2, 0),
        id="bdat-chunk-the-session-goes-on",
    ),
]


@pytest.mark.parametrize(("rejected", "sessions", "notes", "counts"), SYNC_ERRORS)
def test_a_synchronization_error_names_the_client_of_exim_s_h_field(
    rejected, sessions, notes, counts
):
    engine = feed(OPEN, SYNC + rejected)

    assert sessions_of(engine.book) == sessions
    assert engine.notes == notes
    assert (engine.stats.parsed, engine.stats.skipped) == counts


def test_a_line_whose_client_text_holds_a_shape_s_words_is_no_event():
    engine = feed(
        OPEN,
        b"2026-12-03 09:50:02 [30001] H=(x) [192.0.2.9]:1418 F=<a@example.net> rejected RCPT "
        b'<"SMTP connection from [203.0.113.5]:1 D=9s closed by QUIT"@campus.example>: relay '
        b"not permitted",
        b"2026-12-03 09:50:03 [30001] SMTP syntax error in \"SMTP connection from "
        b'[203.0.113.6]:1 lost" H=[192.0.2.9]:1418 unrecognized command',
    )

    assert sessions_of(engine.book) == {"192.0.2.9": (1, 600.0, 1)}
    assert (engine.stats.parsed, engine.stats.ignored) == (1, 2)


@pytest.mark.parametrize(
    "line",
    [
        b"1v0000-000000000AB-abcd H=mail.example.net (helo) [192.0.2.44]:4433 "
        b"I=[198.51.100.1]:25 F=<a@example.net> temporarily rejected after DATA: try later",
        b"1v0000-000000000AB-abcd H=(from [203.0.113.4]) [192.0.2.44]:4433 "
        b"F=<a@from [203.0.113.3]> temporarily rejected after DATA: try later",
        b"1a2B3c-000Def-Gh H=[192.0.2.44]:4433 temporarily rejected after DATA",
    ],
    ids=["exim-4.97-id", "addresses-in-helo-and-sender", "older-id"],
)
def test_a_4xx_after_data_counts_for_the_source_in_h(line):
    engine = feed(b"2026-12-03 09:50:00 [1] " + line)

    assert engine.replies == {"192.0.2.44": {"421": 0, "4xx": 1}}
    assert engine.stats.parsed == 1


NO_MAIL = b"2026-12-03 09:52:42 [18643] no MAIL in SMTP connection from host.example.net " \
          b"(SERVER) [192.0.2.85]:1418 I=[198.51.100.1]:25 D=%s C=QUIT"  # fmt: skip
FILE_START = b"2026-12-03 09:40:00 [1] Start queue run: pid=1"


@pytest.mark.parametrize(
    "duration",
    [b"99999999999s", b"-5s", b"1000w", b"9999999999999999999999h", b"9" * 400 + b"s", b""],
    ids=["3000-years", "negative", "19-years", "huge-hours", "overflowing", "empty"],
)
def test_a_d_no_session_can_last_is_counted_as_bad_and_left_out(duration):
    engine = feed(FILE_START, NO_MAIL.replace(b"%s", duration))

    # Without D= the session counts from the first line read, the least it lasted.
    assert sessions_of(engine.book) == {"192.0.2.85": (1, 762.0, 0)}
    assert engine.stats.bad_fields == 1
    assert (engine.stats.parsed, engine.stats.skipped) == (1, 0)


def test_a_huge_d_is_no_crash_and_no_session_length_in_the_result(tmp_path):
    path = tmp_path / "mainlog"
    path.write_bytes(FILE_START + b"\n" + NO_MAIL.replace(b"%s", b"9" * 400 + b"s") + b"\n")
    settings = Settings(paths=[str(path)], capacity=10, format="exim", timezone="UTC",
                        now="2026-12-03T10:00:00+00:00", force=True, rules=[ANY])  # fmt: skip

    result = analyze(settings)

    assert result["candidates"][0]["longest_session"] == 762
    assert result["stats"]["bad_fields"] == 1


@pytest.mark.parametrize(
    ("line", "longest"),
    [
        pytest.param(
            b"2026-12-03 09:52:42 [2] SMTP command timeout on connection from x (helo D=300s )"
            b" [192.0.2.85]:1418 I=[198.51.100.1]:25",
            762.0,
            id="in-the-helo",
        ),
        pytest.param(
            b"2026-12-03 09:52:42 [2] SMTP protocol synchronization error (input sent without "
            b'waiting for greeting): rejected connection from H=[192.0.2.85]:1418 input="HELO x '
            b'D=5s"',
            762.0,
            id="in-the-input",
        ),
        pytest.param(
            b"2026-12-03 09:52:42 [2] SMTP call from (x) [192.0.2.85]:1418 dropped: too many "
            b'unrecognized commands (last command was "x D=500s")',
            762.0,
            id="in-the-last-command",
        ),
        pytest.param(
            b"2026-12-03 09:52:42 [2] SMTP data timeout (message abandoned) on connection from "
            b"[192.0.2.85]:1418 F=<a D=99s@example.net> D=5s",
            5.0,
            id="in-the-sender-before-exim-s",
        ),
    ],
)
def test_d_is_read_only_from_exim_s_own_field(line, longest):
    engine = feed(FILE_START, line)

    assert sessions_of(engine.book) == {"192.0.2.85": (1, longest, 0)}
    assert engine.stats.bad_fields == 0


def test_lines_shipped_twice_count_once_as_with_postfix():
    close = b"2026-12-03 09:51:00 [30001] SMTP connection from [192.0.2.9]:1418 D=60s closed " \
            b"by QUIT"  # fmt: skip
    alone = b"2026-12-03 09:52:00 [30002] SMTP connection from [192.0.2.7]:5 lost"

    engine = feed(FILE_START, OPEN, OPEN, close, close, alone, alone)

    assert sessions_of(engine.book) == {"192.0.2.9": (1, 60.0, 0), "192.0.2.7": (1, 720.0, 0)}
    assert engine.book.counts["repeated_lines"] == 3
    assert engine.book.counts["start_unknown"] == 1


def test_a_delivery_s_server_is_exim_s_h_not_the_recipient_and_an_absurd_dt_adds_none():
    engine = feed(
        b'2026-12-03 09:50:05 [2] 1v0000-000000000AB-abcd => "x H=[10.9.9.9]"@campus.example '
        b'R=campus T=remote_smtp H=mx1.campus.example [10.0.0.5] C="250 OK" DT=4s',
        b"2026-12-03 09:50:06 [2] 1v0000-000000000AC-abcd => u@campus.example R=campus "
        b'T=remote_smtp H=mx1.campus.example [10.0.0.5] C="250 OK" DT=99999999w',
    )
    engine.servers.finish()

    assert sessions_of(engine.servers) == {"10.0.0.5": (1, 4.0, 0)}
    assert engine.stats.bad_fields == 1


# An ACL's verdict on a connection the start line opened: what the sender address (F=<...>, the
# client's text) holds must not decide it.
VERDICT_OPEN = b"2026-12-03 09:40:00 SMTP connection from [192.0.2.9]:1400 I=[198.51.100.1]:25 " \
               b"(TCP/IP connection count = 1)"  # fmt: skip
VERDICT = b"2026-12-03 09:40:05 H=(bot.example) [192.0.2.9]:1400 I=[198.51.100.1]:25 F=<%s> " \
          b"rejected RCPT <u@elsewhere.example>: relay not permitted"  # fmt: skip
SENDERS = {
    "plain": b"x@bot.example",
    "connection verdict quoted": b'"x rejected connection in "@bot.example',
    "tempfail verdict quoted": b'"a temporarily rejected "@b.example',
    "verdict with escaped quote": b'"x\\" rejected connection in \\""@bot.example',
    "verdict in brackets of the local part": b'"<x> rejected connection in <y>"@bot.example',
}


@pytest.mark.parametrize("sender", SENDERS.values(), ids=SENDERS)
def test_exim_s_verdict_words_count_only_outside_the_client_s_sender_address(sender):
    engine = feed(VERDICT_OPEN, VERDICT.replace(b"%s", sender))

    assert sessions_of(engine.book) == {"192.0.2.9": (1, 1200.0, 1)}
    assert engine.replies == {}
    assert engine.notes == {}
    assert (engine.stats.parsed, engine.stats.ignored, engine.stats.skipped) == (1, 1, 0)


@pytest.mark.parametrize("sender", [b"x@bot.example", b'"x rejected connection in "@bot.example'],
                         ids=["plain", "verdict quoted"])  # fmt: skip
def test_a_sender_imitating_a_refused_connection_keeps_its_long_session_a_candidate(
    tmp_path, sender
):
    path = write_bytes(tmp_path / "mainlog", b"\n".join(
        [VERDICT_OPEN, VERDICT.replace(b"%s", sender),
         b"2026-12-03 09:59:59 Start queue run: pid=4242", b""]
    ))  # fmt: skip
    rule = {"name": "cond2", "min_duration": 200, "min_sessions": 1, "min_risk": 0}

    result = run_analysis(path, format="exim", window=1800.0, capacity=10, rules=[rule])

    assert [candidate["ip"] for candidate in result["candidates"]] == ["192.0.2.9"]
    assert result["occupancy"]["current_sessions"] == 1
    assert result["attack"]["numbers"]["tempfails"] == 0


def test_exim_s_own_verdicts_after_a_sender_address_still_count():
    refused = VERDICT.replace(b"%s", b"x@bot.example").replace(
        b"rejected RCPT <u@elsewhere.example>: relay not permitted",
        b'rejected connection in "connect" ACL: listed',
    )
    delayed = VERDICT.replace(b"%s", b'"a>b"@bot.example').replace(
        b"rejected RCPT", b"temporarily rejected RCPT"
    )

    engine = feed(VERDICT_OPEN, delayed, refused)

    assert sessions_of(engine.book) == {"192.0.2.9": (1, 5.0, 0)}
    assert engine.replies == {"192.0.2.9": {"421": 0, "4xx": 1}}
    assert engine.notes == {"192.0.2.9": {"rejected": 1}}


def test_a_fold_imitated_in_exim_s_own_file_is_one_line():
    line = b"2026-12-03 09:50:00 rejected EHLO from [192.0.2.9]:1000 I=[198.51.100.1]:25: " \
           b"syntactically invalid argument(s): x: message repeated 999999999999 times: " \
           b"[]"  # fmt: skip

    engine = feed(*[line] * 300)

    assert engine.stats.lines == 300


# An ACL's message after "rejected RCPT <...>:" (or MAIL, or after DATA) is text an ACL wrote,
# and may echo the client's: Exim's verdict words count only right after its own fields.
# (the verdict and message after F=<a@b>, the 4xx it counts)
ACL_MESSAGES = {
    "the review's RCPT": (b'rejected RCPT <"y"@campus.example>: temporarily rejected connection '
                          b'in "connect" ACL', 0),
    "MAIL": (b'rejected MAIL <a@b>: rejected connection in "connect" ACL', 0),
    "a 4xx to RCPT": (b'temporarily rejected RCPT <u@campus.example>: rejected connection in '
                      b'"connect" ACL', 1),
    "after DATA": (b"rejected after DATA: x temporarily rejected y", 0),
    "unquoted recipient": (b"rejected RCPT y@campus.example: temporarily rejected connection in "
                           b'"connect" ACL', 0),
}  # fmt: skip


@pytest.mark.parametrize(("verdict", "tempfails"), ACL_MESSAGES.values(), ids=ACL_MESSAGES)
def test_verdict_words_in_an_acl_message_neither_end_the_session_nor_count(verdict, tempfails):
    line = b"2026-12-03 09:50:05 [1201] H=(x) [192.0.2.9]:1418 I=[198.51.100.1]:25 F=<a@b> "
    closed = b"2026-12-03 09:51:00 [1201] SMTP connection from [192.0.2.9]:1418 " \
             b"I=[198.51.100.1]:25 closed by QUIT D=1m"  # fmt: skip

    engine = feed(OPEN, line + verdict, closed)

    assert sessions_of(engine.book) == {"192.0.2.9": (1, 60.0, 0)}
    assert engine.notes == {}
    assert engine.replies == ({"192.0.2.9": {"421": 0, "4xx": 1}} if tempfails else {})
