"""Exchange SMTP protocol log lines in, sessions, replies and notes out."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from ansible_collections.campusnet.smtpguard.plugins.module_utils import _exchange, _formats
from ansible_collections.campusnet.smtpguard.plugins.module_utils._engine import Engine
from ansible_collections.campusnet.smtpguard.plugins.module_utils._sessions import SessionBook
from ansible_collections.campusnet.smtpguard.plugins.module_utils._timestamps import (
    TimestampParser,
)
from support.logs import NOW, UTC, run_analysis, sessions_of
from support.make_exchange import SEND, ExchangeLog, endpoint, iso

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data" / "formats"

# Lines of real Exchange 2013-2019 Receive logs, with documentation addresses: the header a
# file begins with and the line shapes of one session. Shapes as Microsoft's "Protocol
# logging in Exchange Server" page describes the fields and event characters, and as logs
# quoted in public troubleshooting scripts show them (the banner's date puts a comma in the
# data field, which Exchange then quotes).
HEADER = (
    b"#Software: Microsoft Exchange Server\r\n"
    b"#Version: 15.0.0.0\r\n"
    b"#Log-type: SMTP Receive Protocol Log\r\n"
    b"#Date: 2026-12-03T09:00:04.113Z\r\n"
    b"#Fields: date-time,connector-id,session-id,sequence-number,local-endpoint,"
    b"remote-endpoint,event,data,context\r\n"
)
C = b"EXCH01\\Default Frontend EXCH01"
OPEN = b"2026-12-03T09:59:00.000Z," + C + b",08DE6A5B1C2D3E4F,0,198.51.100.1:25,192.0.2.7:50123,+,,"
CLOSE = (
    b"2026-12-03T09:59:40.250Z," + C + b",08DE6A5B1C2D3E4F,9,198.51.100.1:25,192.0.2.7:50123,-,,"
    b"Local"
)


def line(
    when: str,
    event: bytes,
    data: bytes = b"",
    *,
    seq: int = 1,
    remote: bytes = b"192.0.2.7:50123",
    session: bytes = b"08DE6A5B1C2D3E4F",
    context: bytes = b"",
) -> bytes:
    """One line of the session above, fields as given (data already quoted if it must be)."""
    return b",".join(
        (
            when.encode(),
            C,
            session,
            str(seq).encode(),
            b"198.51.100.1:25",
            remote,
            event,
            data,
            context,
        )
    )


def read(*files: bytes, now: float = NOW, engine: Engine | None = None) -> Engine:
    """Read files in order into one engine (a day's window ending at `now`) and finish it."""
    if engine is None:
        book = SessionBook(window_start=now - 86400, now=now, thresholds=(0.0,))
        engine = Engine(book)
    for data in files:
        _exchange.read(
            iter(data.splitlines(keepends=True)),
            engine=engine,
            stamp_of=TimestampParser(zone=UTC, now=now),
        )
    engine.book.finish()
    engine.servers.finish()
    return engine


def counts(engine: Engine) -> tuple[int, int, int, int]:
    stats = engine.stats
    assert stats.lines == stats.parsed + stats.ignored + stats.skipped + stats.after_now
    return stats.lines, stats.parsed, stats.ignored, stats.skipped


def session_file(*middle: bytes, header: bytes = HEADER) -> bytes:
    return header + b"".join(item + b"\r\n" for item in (OPEN, *middle, CLOSE))


# (lines inside the session, parsed, ignored) for each line shape between `+` and `-`.
SHAPES = [
    pytest.param([], 0, 0, id="connect-disconnect"),
    pytest.param(
        [
            line(
                "2026-12-03T09:59:00.001Z",
                b">",
                b'"220 EXCH01.campus.example Microsoft ESMTP '
                b'MAIL Service ready at Thu, 3 Dec 2026 09:59:00 +0000"',
            )
        ],
        0,
        1,
        id="banner-quoted-with-comma",
    ),
    pytest.param([line("2026-12-03T09:59:01.500Z", b"<", b"EHLO [192.0.2.7]")], 0, 1, id="command"),
    pytest.param(
        [
            line(
                "2026-12-03T09:59:01.600Z",
                b"*",
                b"SMTPSubmit SMTPAcceptAnySender",
                context=b"Set Session Permissions",
            )
        ],
        0,
        1,
        id="information",
    ),
    pytest.param(
        [
            line(
                "2026-12-03T09:59:02.000Z",
                b">",
                b'"250 2.6.0 <a@example.net> [InternalId=12, '
                b'Hostname=EXCH01] Queued mail for delivery ""quoted"", ok"',
            )
        ],
        0,
        1,
        id="doubled-quotes-and-commas",
    ),
    pytest.param(
        [
            line(
                "2026-12-03T09:59:02.000Z",
                b"*",
                b"",
                context=b'"TLS protocol SP_PROT_TLS1_2_SERVER'
                b' negotiation succeeded, using bulk encryption algorithm CALG_AES_256"',
            )
        ],
        0,
        1,
        id="quoted-context",
    ),
]


@pytest.mark.parametrize(("middle", "parsed", "ignored"), SHAPES)
def test_line_shapes_of_one_session(middle, parsed, ignored):
    engine = read(session_file(*middle))

    assert sessions_of(engine.book) == {"192.0.2.7": (1, 40.25, 0)}
    assert counts(engine) == (7 + len(middle), 2 + parsed, 5 + ignored, 0)


@pytest.mark.parametrize("newline", [b"\r\n", b"\n"], ids=["crlf", "lf"])
def test_line_ends_do_not_matter(newline):
    engine = read(session_file().replace(b"\r\n", newline))

    assert sessions_of(engine.book) == {"192.0.2.7": (1, 40.25, 0)}


REPLIES = [
    # (event, data, replies of 192.0.2.7, notes of 192.0.2.7)
    pytest.param(
        b">",
        b'"421 4.3.2 The maximum number of concurrent connections has exceeded a '
        b'limit, closing transmission channel"',
        {"421": 1, "4xx": 1},
        {"connection_limit": 1},
        id="421-connection-limit",
    ),
    pytest.param(
        b">",
        b"421 4.4.1 Connection timed out",
        {"421": 1, "4xx": 1},
        {"command_time_limit": 1},
        id="421-timeout",
    ),
    pytest.param(
        b">",
        b"451 4.7.0 Temporary server error. Please try again later. PRX4",
        {"421": 0, "4xx": 1},
        None,
        id="451",
    ),
    pytest.param(b">", b"250 2.1.0 Sender OK", None, None, id="250"),
    pytest.param(b">", b"550 5.7.1 Unable to relay", None, None, id="550"),
    # What the client sent never counts, whatever it looks like.
    pytest.param(b"<", b"421 4.3.2 The maximum number of concurrent", None, None, id="client-text"),
]


@pytest.mark.parametrize(("event", "data", "replies", "notes"), REPLIES)
def test_temporary_failures_the_gateway_sent_are_counted(event, data, replies, notes):
    engine = read(session_file(line("2026-12-03T09:59:10.000Z", event, data)))

    assert engine.replies == ({"192.0.2.7": replies} if replies else {})
    assert engine.notes == ({"192.0.2.7": notes} if notes else {})
    assert sessions_of(engine.book) == {"192.0.2.7": (1, 40.25, 0)}
    assert engine.stats.parsed == 2 + (1 if replies else 0)


def test_a_421_marks_where_the_session_ends_if_its_disconnect_is_lost():
    # The disconnect never comes; the same session id opening again ends the first at its 421.
    first = line("2026-12-03T09:59:10.000Z", b">", b"421 4.4.1 Connection timed out")
    again = OPEN.replace(b"09:59:00.000Z", b"09:59:30.000Z").replace(b"192.0.2.7", b"192.0.2.8")
    engine = read(HEADER + OPEN + b"\r\n" + first + b"\r\n" + again + b"\r\n")

    assert sessions_of(engine.book) == {"192.0.2.7": (1, 10.0, 0), "192.0.2.8": (1, 30.0, 1)}


ENDPOINTS = [
    (b"192.0.2.7:50123", "192.0.2.7"),
    (b"[2001:db8::25]:41000", "2001:db8::25"),
    (b"[2001:DB8:0:0::25]:41000", "2001:db8::25"),
    (b"[::ffff:192.0.2.1]:25", "192.0.2.1"),
    (b"192.0.2.9", "192.0.2.9"),
    (b"2001:db8::26", "2001:db8::26"),
]


@pytest.mark.parametrize(("remote", "source"), ENDPOINTS)
def test_remote_endpoint_becomes_a_normalised_source(remote, source):
    data = HEADER + OPEN.replace(b"192.0.2.7:50123", remote) + b"\r\n"
    data += CLOSE.replace(b"192.0.2.7:50123", remote) + b"\r\n"

    engine = read(data)

    assert sessions_of(engine.book) == {source: (1, 40.25, 0)}
    assert engine.stats.bad_addresses == 0


def test_endpoint_address_splits_port_and_brackets():
    assert _exchange.endpoint_address(b"[2001:db8::1]:25") == b"2001:db8::1"
    assert _exchange.endpoint_address(b"192.0.2.1:25") == b"192.0.2.1"
    assert _exchange.endpoint_address(b"2001:db8::1") == b"2001:db8::1"


HUGE = b'"' + b"x, " * 100_000 + b'"'  # 300 kB: more than csv takes in one field

# (lines put between the session's `+` and `-`, parsed, ignored, skipped, sessions besides
# 192.0.2.7 (40.25 s), counters of the book that must be 1)
FAULTS = [
    pytest.param([b"\x00\x17garbage;;;"], 0, 0, 1, {}, (), id="corrupt-line"),
    pytest.param(
        [b"2026-12-03T09:59:05.000Z," + C + b",08DE6A5B1C2D3E4F,3,198.51.100.1:25,192."],
        0,
        0,
        1,
        {},
        (),
        id="truncated-line",
    ),
    pytest.param(
        [line("2026-12-03T09:59:05.000Z", b">", b'"250 unterminated, quote')],
        0,
        0,
        1,
        {},
        (),
        id="quote-left-open",
    ),
    pytest.param(
        [line("2026-12-03T09:59:05.000Z", b"<", b"EHLO x", session=b"08DEFFFF00000001")],
        0,
        1,
        0,
        {},
        (),
        id="unknown-id",
    ),
    pytest.param(
        [
            line(
                "2026-12-03T09:59:20.000Z",
                b"-",
                session=b"08DEFFFF00000002",
                remote=b"192.0.2.8:1000",
            )
        ],
        1,
        0,
        0,
        {"192.0.2.8": (1, 20.0, 0)},
        ("start_unknown",),
        id="close-without-open",
    ),
    pytest.param(
        [
            line(
                "2026-12-03T09:59:20.000Z",
                b"+",
                session=b"08DEFFFF00000003",
                remote=b"192.0.2.9:1000",
            )
        ],
        1,
        0,
        0,
        {"192.0.2.9": (1, 40.0, 1)},
        (),
        id="open-without-close",
    ),
    pytest.param(
        [line("2026-12-03T09:59:10.000Z", b"+", seq=0, remote=b"192.0.2.10:1000")],
        1,
        0,
        0,
        {"192.0.2.7": (1, 0.0, 0), "192.0.2.10": (1, 30.25, 0)},
        ("ended_unknown",),
        id="id-reuse",
    ),
    pytest.param(
        [line("2026-12-03T09:58:00.000Z", b"<", b"NOOP")], 0, 1, 0, {}, (), id="clock-going-back"
    ),
    pytest.param(
        [
            line(
                "2026-12-03T09:59:20.000Z",
                b"+",
                session=b"08DEFFFF00000004",
                remote=b"[2001:db8::a1]:1000",
            ),
            line(
                "2026-12-03T09:59:30.000Z",
                b"-",
                session=b"08DEFFFF00000004",
                remote=b"[2001:db8::a1]:1000",
            ),
        ],
        2,
        0,
        0,
        {"2001:db8::a1": (1, 10.0, 0)},
        (),
        id="ipv6",
    ),
    pytest.param(
        [
            line("2026-12-03T09:59:20.000Z", b"+", session=b"08DEFFFF00000005", remote=b"unknown"),
            line("2026-12-03T09:59:30.000Z", b"-", session=b"08DEFFFF00000005", remote=b"unknown"),
        ],
        2,
        0,
        0,
        {},
        ("anonymous_sessions",),
        id="unknown-address",
    ),
    pytest.param([line("2026-12-03T09:59:05.000Z", b"<", HUGE)], 0, 1, 0, {}, (), id="huge-line"),
    pytest.param(
        [line("2026-12-03T09:59:05.000Z", b">", b'"421 4.3.2 ' + HUGE[1:])],
        1,
        0,
        0,
        {},
        (),
        id="huge-421",
    ),
    pytest.param(
        [line("2026-12-03T09:59:05.000Z", b"<", b"EHLO h\xff\xfe\xe9.example")],
        0,
        1,
        0,
        {},
        (),
        id="non-utf8",
    ),
    pytest.param(
        [b"2026-13-03T09:59:05.000Z" + line("x", b"<", b"NOOP")[1:]],
        0,
        0,
        1,
        {},
        (),
        id="impossible-time",
    ),
    pytest.param(
        [line("2026-12-03T09:59:05.000Z", b"?", b"NOOP")], 0, 0, 1, {}, (), id="unknown-event"
    ),
    pytest.param([b""], 0, 0, 1, {}, (), id="empty-line"),
]


@pytest.mark.parametrize(
    ("middle", "parsed", "ignored", "skipped", "others", "book_counts"), FAULTS
)
def test_each_fault_is_counted_and_the_session_is_right(
    middle, parsed, ignored, skipped, others, book_counts
):
    engine = read(session_file(*middle))

    expected = {"192.0.2.7": (1, 40.25, 0), **others}
    assert sessions_of(engine.book) == expected
    assert counts(engine) == (7 + len(middle), 2 + parsed, 5 + ignored, skipped)
    for name in book_counts:
        assert engine.book.counts[name] == 1, name


def test_a_disconnect_before_its_connect_lasts_no_time():
    # The clock went back between the two lines: the session is counted, never negative.
    data = HEADER + OPEN + b"\r\n" + CLOSE.replace(b"09:59:40.250Z", b"09:58:40.000Z") + b"\r\n"

    engine = read(data)

    assert sessions_of(engine.book) == {"192.0.2.7": (1, 0.0, 0)}


def test_a_session_goes_on_into_the_next_hourly_file():
    first = HEADER.replace(b"09:00:04", b"09:00:00") + OPEN + b"\r\n"
    second = (
        HEADER.replace(b"09:00:04", b"10:00:00")
        + line("2026-12-03T10:00:10.000Z", b"<", b"DATA").replace(b"09:59", b"10:00")
        + b"\r\n"
        + CLOSE.replace(b"09:59:40.250Z", b"10:01:00.000Z")
        + b"\r\n"
    )

    engine = read(first, second, now=NOW + 3600)

    assert sessions_of(engine.book) == {"192.0.2.7": (1, 120.0, 0)}
    assert engine.book.counts["start_unknown"] == 0


def test_sessions_of_two_servers_with_one_session_id_stay_apart():
    def other(text: bytes, moved: bytes, to: bytes) -> bytes:
        return (
            text.replace(C, b"EXCH02\\Default Frontend EXCH02")
            .replace(b"192.0.2.7", b"192.0.2.8")
            .replace(moved, to)
        )

    opened = other(OPEN, b"59:00.0", b"59:10.0")
    closed = other(CLOSE, b"59:40.2", b"59:50.2")
    data = HEADER + b"\r\n".join((OPEN, opened, CLOSE, closed)) + b"\r\n"

    engine = read(data)

    assert sessions_of(engine.book) == {"192.0.2.7": (1, 40.25, 0), "192.0.2.8": (1, 40.25, 0)}
    assert engine.book.counts["ended_unknown"] == 0


def test_fields_are_found_by_the_header_and_the_header_is_kept_for_the_next_read():
    # Another field order; the second read goes on mid-file, without a header.
    header = (
        b"#Software: Microsoft Exchange Server\r\n#Log-type: SMTP Receive Protocol Log\r\n"
        b"#Fields: event,remote-endpoint,session-id,date-time,connector-id,data\r\n"
    )
    opened = b"+,192.0.2.7:1000,08DE00000000000A,2026-12-03T09:59:00.000Z," + C + b",\r\n"
    closed = b"-,192.0.2.7:1000,08DE00000000000A,2026-12-03T09:59:30.000Z," + C + b",\r\n"
    book = SessionBook(window_start=NOW - 86400, now=NOW, thresholds=(0.0,))
    engine = Engine(book)

    _exchange.read(
        iter([*header.splitlines(keepends=True), opened]),
        engine=engine,
        stamp_of=TimestampParser(zone=UTC, now=NOW),
    )
    saved = engine.capture()["format_state"]
    later = Engine(SessionBook(window_start=NOW - 86400, now=NOW, thresholds=(0.0,)))
    later.book.open_sessions = book.open_sessions
    later.restore({"format_state": saved})
    _exchange.read(iter([closed]), engine=later, stamp_of=TimestampParser(zone=UTC, now=NOW))
    later.book.finish()

    assert saved["exchange"]["fields"][:3] == ["event", "remote-endpoint", "session-id"]
    assert sessions_of(later.book) == {"192.0.2.7": (1, 30.0, 0)}
    assert later.stats.skipped == 0


def test_a_header_without_the_fields_a_session_needs_makes_its_lines_skipped():
    header = HEADER.replace(b"session-id,", b"")
    engine = read(header + OPEN[:40] + b"\r\n")

    assert counts(engine) == (6, 0, 5, 1)


def test_send_log_sessions_are_the_gateways_sessions_to_a_server():
    send = ExchangeLog(connector="Inbound to campus", local="198.51.100.1:0", log_type=SEND)
    session_id = send.new_id()
    remote = endpoint("192.0.2.225", 25)
    send.line(NOW - 100, session_id, remote, "+")
    send.line(NOW - 99, session_id, remote, "<", "421 4.3.2 Service not available")
    send.line(NOW - 90, session_id, remote, ">", "421 4.3.2 what the gateway said")
    send.line(NOW - 80, session_id, remote, "-", "", "Local")

    engine = read(send.data())

    assert sessions_of(engine.servers) == {"192.0.2.225": (1, 20.0, 0)}
    assert engine.book.counts["sessions"] == 0
    assert engine.server_replies == {"192.0.2.225": {"421": 1, "4xx": 1}}
    assert engine.replies == {}


def test_other_exchange_logs_are_not_read_as_sessions():
    data = session_file().replace(b"SMTP Receive Protocol Log", b"Message Tracking Log")

    engine = read(data)

    assert engine.book.counts["sessions"] == 0
    assert counts(engine) == (7, 0, 5, 2)
    assert not _exchange.looks_like(data.splitlines(keepends=True))


def test_lines_after_now_are_counted_apart():
    engine = read(session_file(), now=_at("2026-12-03T09:59:20Z"))

    assert counts(engine) == (7, 1, 5, 0)
    assert engine.stats.after_now == 1
    assert sessions_of(engine.book) == {"192.0.2.7": (1, 20.0, 1)}


def test_line_time_reads_the_first_field_with_milliseconds():
    stamp_of = TimestampParser(zone=UTC, now=NOW)

    assert _exchange.line_time(CLOSE, stamp_of) == _at("2026-12-03T09:59:40Z") + 0.25
    assert _exchange.line_time(HEADER.splitlines()[3], stamp_of) is None
    assert _exchange.line_time(b"", stamp_of) is None


def test_builder_writes_what_the_reader_reads():
    log = ExchangeLog()
    log.session("192.0.2.7", start=NOW - 120, duration=40)
    log.session("2001:db8::25", start=NOW - 60, duration=None)

    engine = read(log.data())

    assert sessions_of(engine.book) == {"192.0.2.7": (1, 40.0, 0), "2001:db8::25": (1, 60.0, 1)}
    assert iso(NOW) == "2026-12-03T10:00:00.000Z"


# Detection: the scenario files are Exchange logs to auto, and to no other reader; an
# Exchange reader claims no file of another format.
def _head(path: Path) -> list[bytes]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        return [handle.readline() for _ in range(200)]


EXCHANGE_FILES = sorted((DATA / "exchange").glob("*.LOG"))
OTHER_FILES = sorted(
    path
    for path in [*(ROOT / "demo" / "sample").glob("mail.log*"), *DATA.glob("*/*")]
    if path.parent.name != "exchange" and path.suffix not in (".json", ".csv", ".md", ".yml")
)


@pytest.mark.parametrize("path", EXCHANGE_FILES, ids=lambda path: path.name)
def test_auto_detection_picks_exchange_and_no_other_reader_claims_it(path):
    head = _head(path)

    assert _formats.detect(head) == "exchange"
    assert [name for name, reader in _formats.READERS.items() if reader.looks_like(head)] == [
        "exchange"
    ]


@pytest.mark.parametrize("path", OTHER_FILES, ids=lambda path: f"{path.parent.name}/{path.name}")
def test_exchange_claims_no_file_of_another_format(path):
    assert not _exchange.looks_like(_head(path))


def _at(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def test_a_read_that_goes_on_mid_file_tells_send_from_receive_lines_by_the_connector():
    # The last header read was a Receive log's; the Send log goes on without its header.
    send = ExchangeLog(connector="Inbound to campus", local="198.51.100.1:0", log_type=SEND)
    session_id = send.new_id()
    send.line(NOW - 100, session_id, endpoint("192.0.2.225", 25), "+")
    send.line(NOW - 80, session_id, endpoint("192.0.2.225", 25), "-", "", "Local")
    book = SessionBook(window_start=NOW - 86400, now=NOW, thresholds=(0.0,))
    engine = Engine(book)
    engine.format_state["exchange"] = {
        "fields": list(_exchange.DEFAULT_FIELDS),
        "log_type": "receive",
    }
    headerless = [text for text in send.data().splitlines(keepends=True) if text[:1] != b"#"]

    engine = read(b"".join(headerless), engine=engine)

    assert sessions_of(engine.servers) == {"192.0.2.225": (1, 20.0, 0)}
    assert engine.book.counts["sessions"] == 0


# ---------------------------------------------------------------------------------------------
# Review findings: a 421 the gateway sent counts for the session's client to the end, and a
# header without the fields a session needs says so


@pytest.mark.parametrize(
    "middle",
    [
        pytest.param([b'"421 4.3.2 Service not available, closing transmission channel"'],
                     id="421-then-disconnect"),
        pytest.param([b'"421-4.3.2 Service not available,"', b"421 4.3.2 closing"],
                     id="multi-line-421"),
    ],
)  # fmt: skip
def test_a_421_the_gateway_sent_counts_as_a_421_of_that_source_in_the_result(tmp_path, middle):
    replies = [line("2026-12-03T09:59:10.000Z", b">", data, seq=2 + index)
               for index, data in enumerate(middle)]  # fmt: skip
    path = tmp_path / "RECV2026120309-1.LOG"
    path.write_bytes(session_file(*replies))

    result = run_analysis(path, format="exchange", force=True)

    (candidate,) = result["candidates"]
    assert (candidate["ip"], candidate["replies_421"], candidate["tempfails"]) == (
        "192.0.2.7", len(middle), len(middle))
    assert candidate["longest_session"] == 40.25
    assert result["stats"]["open_sessions"] == 0


def test_a_421_of_a_session_whose_connect_was_not_read_counts_for_its_remote_endpoint():
    engine = read(
        HEADER
        + line("2026-12-03T09:59:10.000Z", b">", b"421 4.4.1 Connection timed out") + b"\r\n"
        + CLOSE + b"\r\n"
    )  # fmt: skip

    assert engine.replies == {"192.0.2.7": {"421": 1, "4xx": 1}}
    assert engine.book.counts["start_unknown"] == 1


def test_a_header_without_session_id_warns_naming_the_field_with_the_lines_skipped(tmp_path):
    header = HEADER.replace(b"session-id,", b"")
    body = b"".join(
        b"2026-12-03T09:59:0%d.000Z," % index + C + b",%d,198.51.100.1:25,192.0.2.7:50123,+,,\r\n"
        % index
        for index in range(3)
    )
    path = tmp_path / "RECV2026120309-1.LOG"
    path.write_bytes(header + body)
    warnings: list[str] = []

    result = run_analysis(path, format="exchange", warnings=warnings)

    assert result["stats"]["skipped"] == 3
    assert any(
        f"skipped 3 lines of {str(path)!r}" in text and "has no session-id" in text
        for text in warnings
    ), warnings
