"""JSON-lines records in, sessions, risks and replies out, by the configured field mapping."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from ansible_collections.campusnet.smtpguard.plugins.module_utils import _formats, _jsonl
from ansible_collections.campusnet.smtpguard.plugins.module_utils._engine import Engine
from ansible_collections.campusnet.smtpguard.plugins.module_utils._sessions import SessionBook
from ansible_collections.campusnet.smtpguard.plugins.module_utils._timestamps import (
    TimestampParser,
)
from support.logs import NOW, UTC, run_analysis, sessions_of
from support.make_jsonl import JsonlLog, iso

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data" / "formats"


def read(
    *files: bytes, now: float = NOW, options: dict | None = None, engine: Engine | None = None
) -> Engine:
    """Read files in order into one engine (a day's window ending at `now`) and finish it."""
    if engine is None:
        book = SessionBook(window_start=now - 86400, now=now, thresholds=(0.0,))
        engine = Engine(book, options=options)
    for data in files:
        _jsonl.read(
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


def record(when: float, **fields) -> bytes:
    return json.dumps({"time": iso(when), **fields}).encode() + b"\n"


OPEN = record(NOW - 60, src="192.0.2.7", session="s1", event="connect")
CLOSE = record(NOW - 20, src="192.0.2.7", session="s1", event="disconnect")


# A plain log by the defaults, each time shape.
TIMES = [
    pytest.param(iso(NOW - 60), iso(NOW - 20), id="iso-z-milliseconds"),
    pytest.param("2026-12-03T09:59:00+00:00", "2026-12-03T09:59:40+00:00", id="iso-offset"),
    pytest.param("2026-12-03T18:59:00+09:00", "2026-12-03T18:59:40+09:00", id="iso-tokyo"),
    pytest.param("2026-12-03 09:59:00", "2026-12-03 09:59:40", id="space-no-zone"),
    pytest.param(NOW - 60, NOW - 20, id="epoch-seconds"),
    pytest.param(int((NOW - 60) * 1000), int((NOW - 20) * 1000), id="epoch-milliseconds"),
    pytest.param(int((NOW - 60) * 1e6), int((NOW - 20) * 1e6), id="epoch-microseconds"),
    pytest.param(str(NOW - 60), str(NOW - 20), id="epoch-as-text"),
]


@pytest.mark.parametrize(("start", "end"), TIMES)
def test_time_as_iso_text_or_epoch_number(start, end):
    data = (
        json.dumps({"time": start, "src": "192.0.2.7", "session": "s1", "event": "connect"})
        + "\n"
        + json.dumps({"time": end, "src": "192.0.2.7", "session": "s1", "event": "disconnect"})
        + "\n"
    ).encode()

    engine = read(data)

    assert sessions_of(engine.book) == {"192.0.2.7": (1, 40.0, 0)}
    assert counts(engine) == (2, 2, 0, 0)


# Field names other than the defaults, and the mapping that reads them.
MAPPINGS = [
    pytest.param(
        {"timestamp": "T", "source": "S", "session_id": 7, "action": "open"},
        {"timestamp": "T", "source": "S", "session_id": 7, "action": "close"},
        None,
        None,
        id="second-default-names",
    ),
    pytest.param(
        {"@timestamp": "T", "client": {"ip": "S", "port": 5}, "sid": "a", "ev": "OPEN"},
        {"@timestamp": "T", "client": {"ip": "S"}, "sid": "a", "ev": "Close"},
        {"source": "client.ip", "event": "ev"},
        None,
        id="nested-source",
    ),
    pytest.param(
        {"ts": "T", "id.orig_h": "S", "uid": "C1", "what": "syn"},
        {"ts": "T", "id.orig_h": "S", "uid": "C1", "what": "fin"},
        {"source": "id.orig_h", "session": "uid", "event": "what"},
        {"connect": ["syn"], "disconnect": ["fin", "rst"]},
        id="dotted-key-literal",
    ),
    pytest.param(
        {"t": "T", "a": {"b": {"c": "S"}}, "s": 1, "e": 1},
        {"t": "T", "a": {"b": {"c": "S"}}, "s": 1, "e": 2},
        {"time": "t", "source": "a.b.c", "session": "s", "event": "e"},
        {"connect": [1], "disconnect": 2},
        id="numbers",
    ),
    pytest.param(
        {"when": "T", "peer": "S:2525", "conn": "x", "event": "connect"},
        {"when": "T", "peer": "S:2525", "conn": "x", "event": "disconnect"},
        {"time": ["time", "when"], "source": ["src", "peer"], "session": "conn"},
        None,
        id="lists-and-endpoint",
    ),
]


@pytest.mark.parametrize(("first", "last", "fields", "events"), MAPPINGS)
def test_a_mapping_names_the_fields(first, last, fields, events):
    def fill(body: dict, when: float) -> bytes:
        text = json.dumps(body).replace('"T"', f'"{iso(when)}"').replace('"S', '"192.0.2.7')
        return text.encode() + b"\n"

    options = {"jsonl_fields": fields, "jsonl_events": events}
    engine = read(fill(first, NOW - 60) + fill(last, NOW - 20), options=options)

    assert sessions_of(engine.book) == {"192.0.2.7": (1, 40.0, 0)}
    assert counts(engine) == (2, 2, 0, 0)


RISKS = [
    pytest.param(96, 96.0, id="number"),
    pytest.param("97.5", 97.5, id="numeric-text"),
    pytest.param(0, 0.0, id="zero"),
    pytest.param(100, 100.0, id="hundred"),
    pytest.param(None, None, id="null-is-no-risk-given"),
    pytest.param(250, None, id="out-of-range"),
    pytest.param(-3, None, id="negative"),
    pytest.param("-3", None, id="negative-text"),
    pytest.param("abc", None, id="text"),
    pytest.param(True, None, id="boolean"),
    pytest.param(float("inf"), None, id="infinity"),
    pytest.param([50], None, id="list"),
]


@pytest.mark.parametrize(("value", "risk"), RISKS)
def test_risk_in_percent_goes_to_the_engine_and_any_other_value_is_a_bad_field(value, risk):
    data = record(NOW - 60, src="192.0.2.7", session="s1", event="connect", risk=value) + CLOSE

    engine = read(data)

    assert engine.risks == ({"192.0.2.7": risk} if risk is not None else {})
    assert sessions_of(engine.book) == {"192.0.2.7": (1, 40.0, 0)}
    bad = risk is None and value is not None
    assert engine.stats.bad_fields == (1 if bad else 0)
    assert counts(engine) == (2, 2, 0, 0)


def test_a_risk_out_of_range_is_counted_in_the_result_and_the_risk_is_unknown(tmp_path):
    path = tmp_path / "gateway.jsonl"
    path.write_bytes(
        record(NOW - 60, src="192.0.2.7", session="s1", event="connect", risk=250) + CLOSE
    )
    warnings: list[str] = []

    result = run_analysis(path, format="jsonl", risk_source="log", unknown_risk=10.0,
                          warnings=warnings)  # fmt: skip

    assert result["stats"]["bad_fields"] == 1
    (candidate,) = result["candidates"]
    assert (candidate["risk"], candidate["risk_known"]) == (10.0, False)
    assert any("left out 1 values out of range" in text for text in warnings)


def test_replies_count_for_the_source_or_for_the_server_on_a_line_with_a_destination():
    data = (
        OPEN
        + record(NOW - 50, src="192.0.2.7", session="s1", reply="421 4.7.0 Too many connections")
        + record(NOW - 45, src="192.0.2.7", session="s1", reply=450)
        + record(NOW - 40, src="192.0.2.7", session="s1", reply="250 ok")
        + record(NOW - 40, src="192.0.2.7", session="s1", server="192.0.2.225", reply=421)
        + CLOSE
    )

    engine = read(data)

    assert engine.replies == {"192.0.2.7": {"421": 1, "4xx": 2}}
    assert engine.server_replies == {"192.0.2.225": {"421": 1, "4xx": 1}}
    assert counts(engine) == (6, 5, 1, 0)


def test_a_relayed_session_occupies_the_gateway_and_the_server():
    data = (
        record(NOW - 60, src="192.0.2.7", session="s1", event="connect", server="192.0.2.225")
        + record(NOW - 30, session="s2", event="connect", server="192.0.2.225")
        + record(NOW - 20, src="192.0.2.7", session="s1", event="close", server="192.0.2.225")
    )

    engine = read(data)

    assert sessions_of(engine.book) == {"192.0.2.7": (1, 40.0, 0)}
    assert sessions_of(engine.servers) == {"192.0.2.225": (2, 40.0, 1)}


ENDINGS = [
    pytest.param(
        [record(NOW - 40, src="192.0.2.7", session="s1", event="timeout")], 20.0, id="timeout-alone"
    ),
    pytest.param(
        [
            record(NOW - 40, src="192.0.2.7", session="s1", event="timeout"),
            record(NOW - 39, src="192.0.2.7", session="s1", event="close"),
        ],
        20.0,
        id="timeout-then-close",
    ),
    pytest.param(
        [
            record(NOW - 40, src="192.0.2.7", session="s1", event="lost"),
            record(NOW - 30, src="192.0.2.7", session="s1", event="timeout"),
        ],
        20.0,
        id="two-endings",
    ),
]


@pytest.mark.parametrize(("lines", "longest"), ENDINGS)
def test_an_ending_event_ends_the_session_and_its_late_disconnect_is_no_second_session(
    lines, longest
):
    engine = read(OPEN + b"".join(lines))

    assert sessions_of(engine.book) == {"192.0.2.7": (1, longest, 0)}
    assert engine.book.counts["start_unknown"] == 0


def test_the_disconnect_after_an_ending_is_recognised_in_the_next_file():
    book = SessionBook(window_start=NOW - 86400, now=NOW, thresholds=(0.0,))
    engine = Engine(book)
    stamp_of = TimestampParser(zone=UTC, now=NOW)
    _jsonl.read(
        iter([OPEN, record(NOW - 40, src="192.0.2.7", session="s1", event="timeout")]),
        engine=engine,
        stamp_of=stamp_of,
    )
    saved = json.loads(json.dumps(engine.capture()))  # as a checkpoint keeps it

    later = Engine(SessionBook(window_start=NOW - 86400, now=NOW, thresholds=(0.0,)))
    later.book.ended = list(book.ended)
    later.restore(saved)
    _jsonl.read(iter([CLOSE]), engine=later, stamp_of=stamp_of)
    later.book.finish()

    assert sessions_of(later.book) == {"192.0.2.7": (1, 20.0, 0)}
    assert later.book.counts["start_unknown"] == 0


DEEP = b'{"time": "' + iso(NOW - 30).encode() + b'", "src": "192.0.2.9", "x": ' + b"[" * 100_000
HUGE = record(NOW - 30, src="192.0.2.7", session="s1", note="x" * 500_000)

# (lines put between the session's connect and disconnect, parsed, ignored, skipped, sessions
# besides 192.0.2.7 (40 s), counters of the book that must be 1)
FAULTS = [
    pytest.param([b"\x00\x17garbage;;;\n"], 0, 0, 1, {}, (), id="corrupt-line"),
    pytest.param(
        [b'{"time": "2026-12-03T09:59:30Z", "src": "192.0.2.7", "sess\n'],
        0,
        0,
        1,
        {},
        (),
        id="truncated-line",
    ),
    pytest.param(
        [b"[1, 2, 3]\n", b'"text"\n', b"42\n", b"null\n"], 0, 0, 4, {}, (), id="not-an-object"
    ),
    pytest.param(
        [json.dumps({"src": "192.0.2.7", "session": "s1"}).encode() + b"\n"],
        0,
        0,
        1,
        {},
        (),
        id="no-time",
    ),
    pytest.param(
        [record(NOW - 30, session="s1", event="connect")], 0, 0, 1, {}, (), id="no-source"
    ),
    pytest.param(
        [record(NOW - 30, src="192.0.2.8", event="connect")],
        0,
        0,
        1,
        {},
        (),
        id="event-without-session",
    ),
    pytest.param(
        [record(NOW - 30, src="192.0.2.8", risk=99)], 1, 0, 0, {}, (), id="risk-without-session"
    ),
    pytest.param(
        [record(NOW - 30, src="192.0.2.8", session="zz", event="data")],
        0,
        1,
        0,
        {},
        (),
        id="unknown-id",
    ),
    pytest.param(
        [record(NOW - 30, src="192.0.2.8", session="s8", event="disconnect")],
        1,
        0,
        0,
        {"192.0.2.8": (1, 30.0, 0)},
        ("start_unknown",),
        id="close-without-open",
    ),
    pytest.param(
        [record(NOW - 30, src="192.0.2.9", session="s9", event="connect")],
        1,
        0,
        0,
        {"192.0.2.9": (1, 30.0, 1)},
        (),
        id="open-without-close",
    ),
    pytest.param(
        [record(NOW - 50, src="192.0.2.10", session="s1", event="connect")],
        1,
        0,
        0,
        {"192.0.2.7": (1, 0.0, 0), "192.0.2.10": (1, 30.0, 0)},
        ("ended_unknown",),
        id="id-reuse",
    ),
    pytest.param(
        [record(NOW - 3600, src="192.0.2.7", session="s1", event="data")],
        0,
        1,
        0,
        {},
        (),
        id="clock-going-back",
    ),
    pytest.param(
        [
            record(NOW - 50, src="[2001:DB8::a1]:25", session="v6", event="connect"),
            record(NOW - 40, src="2001:db8::a1", session="v6", event="disconnect"),
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
            record(NOW - 50, src="unknown", session="u", event="connect"),
            record(NOW - 40, src="unknown", session="u", event="disconnect"),
        ],
        2,
        0,
        0,
        {},
        ("anonymous_sessions",),
        id="unknown-address",
    ),
    pytest.param([HUGE], 0, 1, 0, {}, (), id="huge-line"),
    pytest.param(
        [b'{"time": "x", "note": "' + b"y" * (2 << 20) + b'"}\n'],
        0,
        0,
        1,
        {},
        (),
        id="over-max-line",
    ),
    pytest.param([DEEP + b"\n"], 0, 0, 1, {}, (), id="deeply-nested"),
    pytest.param(
        [
            b'{"time": "' + iso(NOW - 30).encode() + b'", "src": "192.0.2.7", '
            b'"session": "s1", "helo": "h\xff\xfe\xe9"}\n'
        ],
        0,
        1,
        0,
        {},
        (),
        id="non-utf8",
    ),
    pytest.param(
        [record(NOW - 30, src="h\xe9llo", session="bad", event="connect")],
        1,
        0,
        0,
        {},
        ("anonymous_sessions",),
        id="source-not-an-address",
    ),
    pytest.param([b"\n", b"   \n"], 0, 2, 0, {}, (), id="blank-lines"),
]


@pytest.mark.parametrize(
    ("middle", "parsed", "ignored", "skipped", "others", "book_counts"), FAULTS
)
def test_each_fault_is_counted_and_the_session_is_right(
    middle, parsed, ignored, skipped, others, book_counts
):
    engine = read(OPEN + b"".join(middle) + CLOSE)

    assert sessions_of(engine.book) == {"192.0.2.7": (1, 40.0, 0), **others}
    assert counts(engine) == (2 + len(middle), 2 + parsed, ignored, skipped)
    for name in book_counts:
        assert engine.book.counts[name] == 1, name


def test_a_source_that_is_no_address_is_counted():
    engine = read(OPEN + record(NOW - 30, src="h\xe9llo", session="bad", event="connect") + CLOSE)

    assert engine.stats.bad_addresses == 1


def test_a_disconnect_before_its_connect_lasts_no_time():
    engine = read(OPEN + record(NOW - 90, src="192.0.2.7", session="s1", event="close"))

    assert sessions_of(engine.book) == {"192.0.2.7": (1, 0.0, 0)}


def test_lines_after_now_are_counted_apart():
    engine = read(OPEN + CLOSE, now=NOW - 30)

    assert counts(engine) == (2, 1, 0, 0)
    assert engine.stats.after_now == 1


def test_a_byte_order_mark_on_the_first_line_is_no_fault():
    engine = read(b"\xef\xbb\xbf" + OPEN + CLOSE)

    assert counts(engine) == (2, 2, 0, 0)
    assert _jsonl.looks_like([b"\xef\xbb\xbf" + OPEN])


def test_host_keeps_two_gateways_with_one_session_id_apart():
    data = b"".join(
        (
            record(NOW - 60, src="192.0.2.7", session="1", event="connect", gw="gw1"),
            record(NOW - 50, src="192.0.2.8", session="1", event="connect", gw="gw 2"),
            record(NOW - 20, src="192.0.2.7", session="1", event="disconnect", gw="gw1"),
            record(NOW - 10, src="192.0.2.8", session="1", event="disconnect", gw="gw 2"),
        )
    )

    engine = read(data, options={"jsonl_fields": {"host": "gw"}})

    assert sessions_of(engine.book) == {"192.0.2.7": (1, 40.0, 0), "192.0.2.8": (1, 40.0, 0)}


BAD_OPTIONS = [
    pytest.param({"jsonl_fields": ["time"]}, "jsonl_fields must be a dictionary", id="fields-list"),
    pytest.param(
        {"jsonl_fields": {"ip": "src"}}, "jsonl_fields: 'ip' is not a role", id="unknown-role"
    ),
    pytest.param(
        {"jsonl_fields": {"source": 5}},
        "jsonl_fields: source must be a field name",
        id="field-not-text",
    ),
    pytest.param(
        {"jsonl_fields": {"source": "client..ip"}},
        "jsonl_fields: source must be",
        id="empty-path-part",
    ),
    pytest.param(
        {"jsonl_fields": {"time": None}}, "jsonl_fields: time cannot be turned off", id="no-time"
    ),
    pytest.param(
        {"jsonl_fields": {"source": None, "destination": ""}},
        "source and destination cannot both",
        id="no-source",
    ),
    pytest.param(
        {"jsonl_events": "connect"}, "jsonl_events must be a dictionary", id="events-text"
    ),
    pytest.param(
        {"jsonl_events": {"open": ["x"]}}, "jsonl_events: 'open' is not a kind", id="unknown-kind"
    ),
    pytest.param(
        {"jsonl_events": {"connect": ["a"], "disconnect": ["A"]}},
        "jsonl_events: the value 'A' is under both connect and disconnect",
        id="value-twice",
    ),
    pytest.param(
        {"jsonl_events": {"connect": ["a"]}},
        "jsonl_events: no value .* as disconnect",
        id="no-disconnect",
    ),
    pytest.param(
        {"jsonl_events": {"connect": [{"a": 1}], "disconnect": ["b"]}},
        "jsonl_events: connect must be",
        id="value-not-text",
    ),
]


@pytest.mark.parametrize(("options", "message"), BAD_OPTIONS)
def test_a_bad_mapping_fails_early_naming_the_option(options, message):
    with pytest.raises(ValueError, match=message):
        _jsonl.validate(options)
    with pytest.raises(ValueError, match=message):
        read(OPEN, options=options)


def test_defaults_read_a_plain_log():
    mapping = _jsonl.validate({})

    assert mapping.events == {
        "connect": "connect",
        "open": "connect",
        "start": "connect",
        "disconnect": "disconnect",
        "close": "disconnect",
        "closed": "disconnect",
        "end": "disconnect",
        "timeout": "ending",
        "lost": "ending",
    }
    assert mapping.get({"time": "x", "src": "y"}, "source") == "y"


def test_line_time_uses_the_default_or_the_given_time_field():
    stamp_of = TimestampParser(zone=UTC, now=NOW)
    line = json.dumps({"at": iso(NOW - 5), "time": iso(NOW - 50)}).encode()

    assert _jsonl.line_time(line, stamp_of) == NOW - 50
    assert _jsonl.line_time(line, stamp_of, options={"jsonl_fields": {"time": "at"}}) == NOW - 5
    assert _jsonl.line_time(b"not json", stamp_of) is None


def test_builder_writes_what_the_reader_reads():
    log = JsonlLog()
    log.session("192.0.2.7", start=NOW - 120, duration=40, risk=97)
    log.session("2001:db8::25", start=NOW - 60, duration=None)

    engine = read(log.data())

    assert sessions_of(engine.book) == {"192.0.2.7": (1, 40.0, 0), "2001:db8::25": (1, 60.0, 1)}
    assert engine.risks == {"192.0.2.7": 97.0}


# Detection: the scenario is JSON lines to auto, and to no other reader; the JSON-lines reader
# claims no file of another format.
def _head(path: Path) -> list[bytes]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        return [handle.readline() for _ in range(200)]


JSONL_FILES = sorted((DATA / "jsonl").glob("*.jsonl"))
OTHER_FILES = sorted(
    path
    for path in [*(ROOT / "demo" / "sample").glob("mail.log*"), *DATA.glob("*/*")]
    if path.parent.name != "jsonl" and path.suffix not in (".json", ".csv", ".md", ".yml")
)


@pytest.mark.parametrize("path", JSONL_FILES, ids=lambda path: path.name)
def test_auto_detection_picks_jsonl_and_no_other_reader_claims_it(path):
    head = _head(path)

    assert _formats.detect(head) == "jsonl"
    assert [name for name, reader in _formats.READERS.items() if reader.looks_like(head)] == [
        "jsonl"
    ]


@pytest.mark.parametrize("path", OTHER_FILES, ids=lambda path: f"{path.parent.name}/{path.name}")
def test_jsonl_claims_no_file_of_another_format(path):
    assert not _jsonl.looks_like(_head(path))


@pytest.mark.parametrize(
    ("head", "claimed"),
    [
        pytest.param([b"\n", OPEN, CLOSE], True, id="after-blank-line"),
        pytest.param(
            [OPEN, b"Dec  3 09:59:10 mx1 postfix/smtpd[1]: connect from x[192.0.2.1]\n"],
            False,
            id="json-then-syslog",
        ),
        pytest.param([b'Dec  3 09:59:10 mx1 app[1]: {"time": 1}\n'], False, id="json-in-syslog"),
        pytest.param([b"[1, 2]\n"], False, id="array"),
        pytest.param([b"\n", b"\n"], False, id="blank"),
    ],
)
def test_looks_like_wants_json_objects_on_the_first_lines(head, claimed):
    assert _jsonl.looks_like(head) is claimed
