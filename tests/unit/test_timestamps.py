"""Timestamps: year inference (New Year, 29 February), zones, RFC 3339, durations."""

from __future__ import annotations

import math

import pytest

from ansible_collections.campusnet.smtpguard.plugins.module_utils._timestamps import (
    TimestampError,
    TimestampParser,
    load_zone,
    parse_duration,
    parse_iso,
)
from support.logs import UTC, PostfixLog, at, by_source, run_analysis

YEAR_BY_REFERENCE = [
    # (stamp, file modification time) -> time; the latest year not after the file was written
    pytest.param(
        b"Dec 31 23:59:50",
        "2027-01-01T00:05:00+00:00",
        "2026-12-31T23:59:50+00:00",
        id="december-line-in-january-file",
    ),
    pytest.param(
        b"Jan  1 00:00:10",
        "2027-01-01T00:05:00+00:00",
        "2027-01-01T00:00:10+00:00",
        id="january-line-in-january-file",
    ),
    pytest.param(
        b"Dec 03 10:00:00", "2026-12-03T10:00:00+00:00", "2026-12-03T10:00:00+00:00", id="same-day"
    ),
    pytest.param(
        b"Dec  3 10:30:00",
        "2026-12-03T10:00:00+00:00",
        "2026-12-03T10:30:00+00:00",
        id="clock-slightly-ahead-stays-this-year",
    ),
    pytest.param(
        b"Feb 29 12:00:00",
        "2028-03-01T00:00:00+00:00",
        "2028-02-29T12:00:00+00:00",
        id="leap-day-in-leap-year",
    ),
    pytest.param(
        b"Feb 29 12:00:00",
        "2027-03-01T00:00:00+00:00",
        "2024-02-29T12:00:00+00:00",
        id="leap-day-read-in-non-leap-year",
    ),
    pytest.param(
        b"Feb 28 12:00:00",
        "2027-03-01T00:00:00+00:00",
        "2027-02-28T12:00:00+00:00",
        id="feb-28-non-leap",
    ),
    pytest.param(
        b"Mar  1 00:00:00",
        "2028-03-01T00:05:00+00:00",
        "2028-03-01T00:00:00+00:00",
        id="after-leap-day",
    ),
]


@pytest.mark.parametrize(("stamp", "reference", "expected"), YEAR_BY_REFERENCE)
def test_year_less_stamp_takes_the_latest_year_not_after_the_file_time(stamp, reference, expected):
    parser = TimestampParser(zone=UTC, reference=at(reference))

    assert parser(stamp) == at(expected)


YEAR_BY_NOW = [
    pytest.param(
        b"Dec 31 23:00:00",
        "2027-01-01T01:00:00+00:00",
        "2026-12-31T23:00:00+00:00",
        id="december-line-check-in-january",
    ),
    pytest.param(
        b"Jan  1 01:00:00",
        "2026-12-31T23:00:00+00:00",
        "2027-01-01T01:00:00+00:00",
        id="january-line-check-in-december-is-ahead",
    ),
    pytest.param(
        b"Jun 15 12:00:00", "2026-12-03T10:00:00+00:00", "2026-06-15T12:00:00+00:00", id="mid-year"
    ),
    pytest.param(
        b"Feb 29 08:00:00",
        "2028-02-29T09:00:00+00:00",
        "2028-02-29T08:00:00+00:00",
        id="leap-day-now-on-leap-day",
    ),
    pytest.param(
        b"Feb 29 08:00:00",
        "2025-03-01T00:00:00+00:00",
        "2024-02-29T08:00:00+00:00",
        id="leap-day-nearest-leap-year",
    ),
]


@pytest.mark.parametrize(("stamp", "now", "expected"), YEAR_BY_NOW)
def test_year_less_stamp_takes_the_year_nearest_to_now(stamp, now, expected):
    # A file time that would say otherwise must not matter once now is given.
    parser = TimestampParser(zone=UTC, now=at(now), reference=at("2020-01-01T00:00:00+00:00"))

    assert parser(stamp) == at(expected)


@pytest.mark.parametrize(
    ("stamp", "year", "expected"),
    [
        (b"Mar  4 14:21:04", 2016, "2016-03-04T14:21:04+00:00"),
        (b"Dec 31 23:59:59", 2016, "2016-12-31T23:59:59+00:00"),
        (b"Feb 29 00:00:00", 2028, "2028-02-29T00:00:00+00:00"),
        (b"Feb 29 00:00:00", 2027, None),
    ],
)
def test_year_option_wins_over_inference(stamp, year, expected):
    parser = TimestampParser(zone=UTC, year=year, now=at("2026-12-03T10:00:00+00:00"))

    assert parser(stamp) == (None if expected is None else at(expected))


@pytest.mark.parametrize(
    ("zone", "stamp", "expected"),
    [
        ("UTC", b"Dec  3 10:00:00", "2026-12-03T10:00:00+00:00"),
        ("Asia/Tokyo", b"Dec  3 19:00:00", "2026-12-03T10:00:00+00:00"),
        ("Europe/Berlin", b"Jul  1 12:00:00", "2026-07-01T10:00:00+00:00"),
        ("Europe/Berlin", b"Nov  5 12:00:00", "2026-11-05T11:00:00+00:00"),
        ("America/New_York", b"Jul  1 12:00:00", "2026-07-01T16:00:00+00:00"),
        ("America/New_York", b"Dec  1 12:00:00", "2026-12-01T17:00:00+00:00"),
        ("Asia/Tokyo", b"2026-12-03T19:00:00", "2026-12-03T10:00:00+00:00"),
        ("Asia/Tokyo", b"2026-12-03T10:00:00+00:00", "2026-12-03T10:00:00+00:00"),
    ],
)
def test_timezone_applies_to_stamps_without_offset(zone, stamp, expected):
    parser = TimestampParser(zone=load_zone(zone), now=at("2026-12-03T10:00:00+00:00"))

    assert parser(stamp) == at(expected)


def test_tokyo_and_utc_readings_of_one_stamp_are_nine_hours_apart():
    now = at("2026-12-03T10:00:00+00:00")
    tokyo = TimestampParser(zone=load_zone("Asia/Tokyo"), now=now)
    utc = TimestampParser(zone=load_zone("UTC"), now=now)

    assert utc(b"Dec  3 09:00:00") - tokyo(b"Dec  3 09:00:00") == 9 * 3600


@pytest.mark.parametrize(
    ("stamp", "expected"),
    [
        (b"2026-12-03T10:00:00Z", "2026-12-03T10:00:00+00:00"),
        (b"2026-12-03T10:00:00z", "2026-12-03T10:00:00+00:00"),
        (b"2026-12-03T19:00:00+09:00", "2026-12-03T10:00:00+00:00"),
        (b"2026-12-03T05:00:00-05:00", "2026-12-03T10:00:00+00:00"),
        (b"2026-12-03T10:00:00.250+00:00", "2026-12-03T10:00:00.250+00:00"),
        (b"2026-12-03T19:00:00.123456+09:00", "2026-12-03T10:00:00.123456+00:00"),
    ],
)
def test_rfc3339_stamps_carry_their_own_offset(stamp, expected):
    parser = TimestampParser(zone=load_zone("America/New_York"), now=0.0)

    assert parser(stamp) == pytest.approx(at(expected), abs=1e-6)


INVALID = [
    b"Dec 32 10:00:00",
    b"Dec  0 10:00:00",
    b"Feb 30 10:00:00",
    b"Foo  3 10:00:00",
    b"dec  3 10:00:00",
    b"Dec  3 24:00:00",
    b"Dec  3 10:60:00",
    b"Dec  3 10:00",
    b"Dec  3 10:00:00 ",
    b"Dec  3 1a:00:00",
    b"Dec-03-10:00:00",
    b"2026-13-01T00:00:00Z",
    b"2026-12-03T25:00:00Z",
    b"2026-12-03",
    b"20261203T100000",
    b"2026-12-03T10:00:00+99:00",
    b"\xff\xfe\x00 3 10:00:00",
    b"",
]


@pytest.mark.parametrize("stamp", INVALID)
def test_invalid_stamps_give_none(stamp):
    parser = TimestampParser(zone=UTC, now=at("2026-12-03T10:00:00+00:00"))

    assert parser(stamp) is None


def test_parser_returns_the_same_time_for_a_repeated_stamp():
    parser = TimestampParser(zone=UTC, now=at("2026-12-03T10:00:00+00:00"))

    first = parser(b"Dec  3 09:00:00")

    assert parser(b"Dec  3 09:00:00") == first == at("2026-12-03T09:00:00+00:00")


def test_log_across_new_year_read_with_january_mtime_keeps_its_order(tmp_path):
    log = PostfixLog()
    start = at("2026-12-31T23:59:30+00:00")
    log.session("192.0.2.1", start=start, duration=60)
    log.session("192.0.2.2", start=start + 10, duration=None)
    log.write(tmp_path / "mail.log", mtime=at("2027-01-01T00:05:00+00:00"))

    result = run_analysis(tmp_path / "mail.log", now=None, window="10m")

    assert result["stats"]["window_end"] == "2027-01-01T00:00:30+00:00"
    assert by_source(result)["192.0.2.1"]["longest_session"] == 60
    assert by_source(result)["192.0.2.2"]["longest_session"] == 50
    assert result["stats"]["sessions"] == 2


DURATIONS = [
    (90, 90.0),
    (90.5, 90.5),
    (0, 0.0),
    ("90", 90.0),
    ("45s", 45.0),
    (" 45 s ", 45.0),
    ("30m", 1800.0),
    ("2h", 7200.0),
    ("1.5h", 5400.0),
    ("1d", 86400.0),
]


@pytest.mark.parametrize(("value", "seconds"), DURATIONS)
def test_parse_duration_reads_seconds_and_units(value, seconds):
    assert parse_duration(value) == seconds


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("-5", "not a duration"),
        (-5, "negative"),
        ("5x", "not a duration"),
        ("", "not a duration"),
        ("1h30m", "not a duration"),
        ("m", "not a duration"),
        (True, "not a duration"),
        (math.nan, "finite"),
        (math.inf, "finite"),
    ],
)
def test_parse_duration_refuses_what_is_not_a_duration(value, message):
    with pytest.raises(TimestampError, match=message) as caught:
        parse_duration(value, name="window")

    assert str(caught.value).startswith("window: ")


@pytest.mark.parametrize(
    ("text", "zone", "expected"),
    [
        ("2026-12-03T10:00:00Z", None, "2026-12-03T10:00:00+00:00"),
        ("2026-12-03T19:00:00+09:00", None, "2026-12-03T10:00:00+00:00"),
        ("2026-12-03T19:00:00", "Asia/Tokyo", "2026-12-03T10:00:00+00:00"),
        (" 2026-12-03T10:00:00.5Z ", None, "2026-12-03T10:00:00.5+00:00"),
    ],
)
def test_parse_iso_reads_now(text, zone, expected):
    assert parse_iso(text, zone=load_zone(zone)) == at(expected)


@pytest.mark.parametrize("text", ["yesterday", "2026-12-03T25:00:00Z", "12/03/2026", ""])
def test_parse_iso_refuses_what_is_not_iso_8601(text):
    with pytest.raises(TimestampError, match="not an ISO 8601 time"):
        parse_iso(text, zone=UTC)


@pytest.mark.parametrize("name", ["Mars/Olympus", "Asia/Tokio", "../etc/passwd"])
def test_unknown_zone_is_an_error_naming_it(name):
    with pytest.raises(TimestampError, match="is not an IANA time zone"):
        load_zone(name)
