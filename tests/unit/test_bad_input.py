"""Bad input is counted, never a crash: lines = parsed + ignored + skipped + after_now."""

from __future__ import annotations

import pytest

from ansible_collections.campusnet.smtpguard.plugins.module_utils._analyze import AnalysisError
from support.logs import NOW, PostfixLog, by_source, run_analysis, write_bytes

STAMP = b"Dec  3 09:59:10"
JUNK = bytes((index * 37 + 11) % 256 for index in range(600)).replace(b"\n", b"")

# (lines put between a session's connect and disconnect, parsed, ignored, skipped, sources
# besides 192.0.2.1 with their longest session)
CASES = [
    pytest.param(
        [
            STAMP + b" mx1 postfix/smtpd[200]: connect from h\xff\xfe.example[192.0.2.2]",
            b"Dec  3 09:59:40 mx1 postfix/smtpd[200]: disconnect from h\xff\xfe.example[192.0.2.2]",
        ],
        2,
        0,
        0,
        {"192.0.2.2": 30},
        id="non-utf8-client-name",
    ),
    pytest.param(
        [STAMP + b" mx1 postfix/smtpd[100]: NOQUEUE: reject: RCPT from x: <\xe9t\xe9>"],
        0,
        1,
        0,
        {},
        id="non-utf8-in-smtpd-text",
    ),
    pytest.param(
        [STAMP + b" mx1 postfix/qmgr[55]: 3F1A2B4C5D: from=<\xc3\x28@example.org>"],
        0,
        1,
        0,
        {},
        id="invalid-utf8-other-program",
    ),
    pytest.param(
        [STAMP + b" mx1 postfix/smtpd[300]: connect from unkn"], 0, 0, 1, {}, id="truncated-connect"
    ),
    pytest.param([STAMP + b" mx1 postfix/smtpd[3"], 0, 0, 1, {}, id="truncated-at-pid"),
    pytest.param([b"Dec  3 09:5"], 0, 0, 1, {}, id="truncated-stamp"),
    pytest.param(
        [b"Dec 32 09:59:10 mx1 postfix/smtpd[300]: connect from unknown[192.0.2.3]"],
        0,
        0,
        1,
        {},
        id="impossible-date",
    ),
    pytest.param(
        [b"2026-13-03T09:59:10Z mx1 postfix/smtpd[300]: connect from unknown[192.0.2.3]"],
        0,
        0,
        1,
        {},
        id="impossible-rfc3339",
    ),
    pytest.param([JUNK], 0, 0, 1, {}, id="binary-junk"),
    pytest.param([b"\x00" * 4096], 0, 0, 1, {}, id="nul-block"),
    pytest.param(
        [b"\x00" * 64 + STAMP + b" mx1 postfix/smtpd[300]: connect from unknown[192.0.2.3]"],
        0,
        0,
        1,
        {},
        id="nul-prefixed-line",
    ),
    pytest.param(
        [STAMP + b" mx1 postfix/smtpd[100]: lost connection after DATA\x00\x00 from x"],
        1,
        0,
        0,
        {},
        id="nul-inside-valid-line",
    ),
    pytest.param([b""], 0, 0, 1, {}, id="empty-line"),
    pytest.param([b"\r"], 0, 0, 1, {}, id="carriage-return-only"),
    pytest.param(
        [
            STAMP + b" mx1 postfix/smtpd[300]: connect from unknown[192.0.2.3]",
            b"Dec  3 09:59:50 mx1 postfix/smtpd[300]: disconnect from unknown[192.0.2.3] "
            + b"unknown=0/1 " * 1700,
        ],
        2,
        0,
        0,
        {"192.0.2.3": 40},
        id="20kB-valid-line",
    ),
    pytest.param([b"A" * 20_000], 0, 0, 1, {}, id="20kB-letters"),
    pytest.param([STAMP + b" " + JUNK * 34], 0, 0, 1, {}, id="20kB-junk-after-stamp"),
    pytest.param(
        [STAMP + b" mx1 postfix/smtpd[300]: " + b"\x80" * 20_000], 0, 1, 0, {}, id="20kB-smtpd-text"
    ),
    pytest.param([STAMP + b" mx1 kernel: \xff\xfe\xfd"], 0, 1, 0, {}, id="other-program-junk"),
]


@pytest.mark.parametrize(("junk", "parsed", "ignored", "skipped", "sources"), CASES)
def test_bad_lines_are_counted_and_the_rest_is_read(
    tmp_path, junk, parsed, ignored, skipped, sources
):
    head = b"Dec  3 09:58:20 mx1 postfix/smtpd[100]: connect from unknown[192.0.2.1]\n"
    tail = b"Dec  3 09:59:20 mx1 postfix/smtpd[100]: disconnect from unknown[192.0.2.1]\n"
    path = write_bytes(tmp_path / "mail.log", head + b"".join(line + b"\n" for line in junk) + tail)

    result = run_analysis(path, format="postfix")

    stats = result["stats"]
    assert (stats["parsed"], stats["ignored"], stats["skipped"]) == (2 + parsed, ignored, skipped)
    assert stats["lines"] == len(junk) + 2
    assert (
        stats["lines"] == stats["parsed"] + stats["ignored"] + stats["skipped"] + stats["after_now"]
    )
    assert {ip: c["longest_session"] for ip, c in by_source(result).items()} == {
        "192.0.2.1": 60,
        **sources,
    }


def test_crlf_line_ends_read_like_lf(tmp_path):
    results = []
    for newline in ("\n", "\r\n"):
        log = PostfixLog(newline=newline)
        log.session("192.0.2.1", start=NOW - 100, duration=60, ending="lost connection after DATA")
        log.session("2001:db8::25", start=NOW - 50, duration=None, style="rfc3339")
        log.line(NOW - 20, "NOQUEUE: reject: RCPT from unknown[192.0.2.9]: 554 denied", pid=7)
        results.append(run_analysis(log.write(tmp_path / f"mail{len(newline)}.log")))

    lf, crlf = results
    assert crlf["candidates"] == lf["candidates"]
    assert {key: crlf["stats"][key] for key in ("lines", "parsed", "ignored", "skipped")} == {
        "lines": 5,
        "parsed": 4,
        "ignored": 1,
        "skipped": 0,
    }
    assert by_source(crlf)["2001:db8::25"]["open_sessions"] == 1


def test_last_line_without_newline_is_read(tmp_path):
    path = write_bytes(
        tmp_path / "mail.log",
        b"Dec  3 09:58:20 mx1 postfix/smtpd[100]: connect from unknown[192.0.2.1]\n"
        b"Dec  3 09:59:20 mx1 postfix/smtpd[100]: disconnect from unknown[192.0.2.1]",
    )

    result = run_analysis(path, now=None)

    assert by_source(result)["192.0.2.1"]["longest_session"] == 60
    assert result["stats"]["window_end"] == "2026-12-03T09:59:20+00:00"


def test_empty_file_with_now_gives_empty_counts(tmp_path):
    path = write_bytes(tmp_path / "mail.log", b"")

    result = run_analysis(path, format="postfix")

    assert {key: result["stats"][key] for key in ("lines", "parsed", "sessions")} == {
        "lines": 0,
        "parsed": 0,
        "sessions": 0,
    }
    assert result["occupancy"]["current"] == 0.0
    assert result["candidates"] == []


@pytest.mark.parametrize(
    ("data", "options", "message"),
    [
        pytest.param(
            b"",
            {"format": "postfix", "now": None},
            "the log files are empty",
            id="empty-without-now",
        ),
        pytest.param(b"", {"now": None}, "the log files are empty", id="empty-format-auto"),
        pytest.param(
            JUNK + b"\n" + JUNK,
            {"format": "postfix", "now": None},
            "no line with a readable timestamp",
            id="junk-without-now",
        ),
    ],
)
def test_file_with_nothing_to_read_fails_naming_it(tmp_path, data, options, message):
    path = write_bytes(tmp_path / "mail.log", data)

    with pytest.raises(AnalysisError, match=message) as caught:
        run_analysis(path, **options)

    assert str(path) in str(caught.value)


def test_file_of_junk_with_now_fails_instead_of_an_all_clear(tmp_path):
    path = write_bytes(tmp_path / "mail.log", b"\n".join([JUNK, b"\x00" * 100, b"", b"x" * 300]))

    with pytest.raises(AnalysisError, match="none of the 4 lines of .* could be read"):
        run_analysis(path, format="postfix")


# What a skewed clock, a stale log or a wrong option must not do.


def test_one_skewed_line_at_the_end_does_not_move_the_check(tmp_path):
    log = PostfixLog()
    log.sessions("203.0.113.9", 45, start=NOW - 600, duration=25, spacing=2)
    log.raw(NOW + 1, "2027-06-01T10:00:00+00:00 mx9 postfix/pickup[1]: 1A2B3C: uid=0 from=<root>")
    path = log.write(tmp_path / "mail.log", mtime=NOW + 5)

    result = run_analysis(path, now=None)

    assert result["stats"]["window_end"] == "2026-12-03T09:51:53+00:00"  # the newest real line
    assert "203.0.113.9" in by_source(result)


def test_one_line_dated_three_weeks_ahead_does_not_hide_the_flood(tmp_path):
    log = PostfixLog()
    log.sessions("203.0.113.9", 45, start=NOW - 600, duration=25, spacing=2)
    log.raw(NOW + 1, "Dec 25 10:00:00 mx9 postfix/pickup[1]: 1A2B3C: uid=0 from=<root>")
    path = log.write(tmp_path / "mail.log", mtime=NOW + 5)

    result = run_analysis(path, now=None)

    assert result["stats"]["after_now"] == 0
    assert "203.0.113.9" in by_source(result)


def test_open_sessions_do_not_run_on_past_a_stale_log(tmp_path):
    log = PostfixLog()
    log.session("203.0.113.9", start=NOW - 100, duration=None)
    log.session("192.0.2.1", start=NOW - 50, duration=10)
    path = log.write(tmp_path / "mail.log")
    warnings: list[str] = []

    result = run_analysis(path, now="2026-12-04T10:00:00+00:00", warnings=warnings)

    slow = by_source(result)["203.0.113.9"]
    assert slow["longest_session"] == 60  # up to the newest line, not a day
    assert any("before now" in warning for warning in warnings)


def test_open_sessions_count_their_age_at_now_shortly_after_the_last_line(tmp_path):
    log = PostfixLog()
    log.session("203.0.113.9", start=NOW - 300, duration=None)
    log.session("192.0.2.1", start=NOW - 200, duration=10)
    path = log.write(tmp_path / "mail.log")

    result = run_analysis(path)

    assert by_source(result)["203.0.113.9"]["longest_session"] == 300


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"paths_override": []}, "paths is empty"),
        ({"window": "0"}, "window must be more than 0 s"),
        ({"window": "999999999999d"}, "at most 366 days"),
        ({"trigger_occupancy": float("nan")}, "trigger_occupancy must be a percentage"),
        ({"alert_occupancy": -1.0}, "alert_occupancy must be a percentage"),
        ({"unknown_risk": 500.0}, "unknown_risk must be from 0 to 100"),
        ({"postscreen_threshold": 0}, "postscreen_threshold must be at least 1"),
        ({"year": 0}, "year must be a year"),
        ({"now": "0001-01-01T00:00:00"}, "now must lie between 1971 and 9998"),
    ],
)
def test_meaningless_options_are_refused_before_reading(tmp_path, options, message):
    written = PostfixLog()
    written.session("192.0.2.1", start=NOW - 10, duration=5)
    log_path = written.write(tmp_path / "mail.log")
    paths = options.pop("paths_override", [log_path])

    with pytest.raises((AnalysisError, ValueError), match=message):
        run_analysis(*paths, **options)
