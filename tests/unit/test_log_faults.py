"""Faults of real log pipelines, whatever the format: lines shipped out of order or twice,
several formats in one list, a forced format that does not fit, compressions not read."""

from __future__ import annotations

import bz2
import json
import lzma

import pytest

from ansible_collections.campusnet.smtpguard.plugins.module_utils._analyze import (
    AnalysisError,
    Settings,
    analyze,
)
from support.logs import NOW, PostfixLog, iso

COND2 = [{"name": "cond2", "min_duration": 200, "min_sessions": 1, "min_risk": 95}]
ANY = [{"name": "any", "min_duration": 0, "min_sessions": 1, "min_risk": 0}]


def _jsonl(path, events):
    path.write_text(
        "".join(
            json.dumps({"time": iso(when), "src": source, "session": session, "event": event,
                        **({"risk": risk} if risk is not None else {})}) + "\n"
            for when, source, session, event, risk in events
        )
    )  # fmt: skip
    return path


def _analyze(paths, warnings=None, **options):
    settings = Settings(paths=[str(path) for path in paths], capacity=10, timezone="UTC",
                        now=iso(NOW), force=True, **options)  # fmt: skip
    return analyze(settings, warn=(warnings.append if warnings is not None else lambda _: None))


def test_an_end_line_shipped_before_its_start_line_is_one_short_session(tmp_path):
    log = _jsonl(tmp_path / "gateway.jsonl", [
        (NOW - 600, "192.0.2.7", "s1", "disconnect", None),
        (NOW - 600, "192.0.2.7", "s1", "connect", 99),
        (NOW - 1, "192.0.2.8", "s2", "connect", None),
        (NOW - 1, "192.0.2.8", "s2", "disconnect", None),
    ])  # fmt: skip

    result = _analyze([log], rules=COND2)

    assert result["candidates"] == []
    assert result["stats"]["sessions"] == 2
    assert result["stats"]["open_sessions"] == 0
    assert result["stats"]["start_unknown"] == 0


def test_lines_shipped_twice_count_once(tmp_path):
    once = [
        (NOW - 600, "192.0.2.7", "s1", "connect", None),
        (NOW - 570, "192.0.2.7", "s1", "disconnect", None),
    ]
    log = _jsonl(tmp_path / "gateway.jsonl", [event for event in once for _ in range(2)])

    result = _analyze([log])

    assert result["stats"]["sessions"] == 1
    assert result["stats"]["repeated_lines"] == 2
    assert result["stats"]["ended_unknown"] == result["stats"]["start_unknown"] == 0


def test_a_postfix_pid_that_ends_and_starts_again_in_one_second_is_two_sessions(tmp_path):
    # The first session's connect lies before the file; the pid serves the next client at
    # once. That start is a new session, not the first one's start logged late.
    log = PostfixLog()
    log.disconnect(NOW - 300, "192.0.2.1", pid=100)
    log.connect(NOW - 300, "192.0.2.2", pid=100)
    log.disconnect(NOW - 270, "192.0.2.2", pid=100)
    path = log.write(tmp_path / "mail.log")

    result = _analyze([path], format="postfix")

    assert result["stats"]["sessions"] == 2
    assert result["stats"]["start_unknown"] == 1


def test_each_rotated_family_is_read_in_its_own_format(tmp_path):
    postfix = PostfixLog()
    for index in range(3):
        postfix.session("192.0.2.1", start=NOW - 500 + index * 60, duration=10, pid=200 + index)
    postfix_path = postfix.write(tmp_path / "mail.log")
    jsonl_path = _jsonl(tmp_path / "edge.jsonl", [
        (NOW - 400, "198.51.100.9", "e1", "connect", None),
        (NOW - 390, "198.51.100.9", "e1", "disconnect", None),
    ])  # fmt: skip

    result = _analyze([postfix_path, jsonl_path])

    assert result["stats"]["format"] == "jsonl, postfix"
    assert result["stats"]["sessions"] == 4
    assert result["stats"]["ignored"] == 0


def test_a_forced_format_that_fits_no_file_fails_naming_the_format_the_file_has(tmp_path):
    log = _jsonl(tmp_path / "edge.jsonl", [(NOW - 400, "198.51.100.9", "e1", "connect", None)])
    postfix = PostfixLog()
    postfix.session("192.0.2.1", start=NOW - 500, duration=10)
    path = postfix.write(tmp_path / "mail.log")

    with pytest.raises(AnalysisError, match="look like a jsonl log: set format to jsonl"):
        _analyze([log], format="postfix")
    # Its lines are other programs' to the Exim reader, not junk: a silent all-clear before.
    with pytest.raises(AnalysisError, match=r"mail\.log.* of a exim log, and they look like a "
                                            r"postfix log: set format to postfix, or to auto"):
        _analyze([path], format="exim")


def test_a_forced_format_that_does_not_fit_one_of_the_files_warns_and_says_so(tmp_path):
    exim = tmp_path / "mainlog"
    exim.write_bytes(b"2026-12-03 09:50:00 [1200] SMTP connection from [192.0.2.9]:1418 "
                     b"I=[198.51.100.1]:25 (TCP/IP connection count = 1)\n")  # fmt: skip
    postfix = PostfixLog()
    postfix.session("192.0.2.1", start=NOW - 500, duration=10)
    path = postfix.write(tmp_path / "mail.log")
    warnings: list[str] = []

    result = _analyze([exim, path], warnings, format="exim")

    assert result["stats"]["unmatched_files"] == [
        {"path": str(path), "format": "exim", "lines": 2, "looks_like": "postfix"}
    ]
    assert any("mail.log" in text and "a exim log" in text and "set format to postfix" in text
               for text in warnings)  # fmt: skip
    assert result["stats"]["sessions"] == 1


@pytest.mark.parametrize(
    ("compress", "name"), [(bz2.compress, "bzip2"), (lzma.compress, "xz")], ids=["bz2", "xz"]
)
def test_a_rotation_compressed_otherwise_than_gzip_is_refused_by_name(tmp_path, compress, name):
    postfix = PostfixLog()
    postfix.session("192.0.2.1", start=NOW - 500, duration=10)
    live = postfix.write(tmp_path / "maillog")
    rotated = tmp_path / "maillog.0.bz2"
    rotated.write_bytes(compress(live.read_bytes()))

    with pytest.raises(AnalysisError, match=rf"maillog\.0\.bz2.*compressed with {name}"):
        _analyze([tmp_path / "maillog*"])


def test_a_configured_server_never_seen_is_named_in_a_warning(tmp_path):
    postfix = PostfixLog()
    postfix.session("192.0.2.1", start=NOW - 500, duration=10)
    path = postfix.write(tmp_path / "mail.log")
    warnings: list[str] = []

    result = _analyze([path], warnings, servers=[{"name": "mail9", "address": "10.9.9.9"}])

    assert result["servers"][0]["sessions"] == 0
    assert any("mail9" in text and "check the servers' addresses" in text for text in warnings)


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("attack_kinds", {"ddos_sources": 10**400}, "must be a number"),
        ("servers", [{"name": "a", "address": "10.0.0.1"}, {"name": "a", "address": "10.0.0.2"}],
         "used twice"),
    ],
    ids=["huge-number", "same-name"],
)  # fmt: skip
def test_measurement_options_are_refused_with_their_name(tmp_path, option, value, message):
    postfix = PostfixLog()
    postfix.session("192.0.2.1", start=NOW - 500, duration=10)
    path = postfix.write(tmp_path / "mail.log")

    with pytest.raises(AnalysisError, match=message):
        _analyze([path], **{option: value})


# One session of 192.0.2.7 from NOW - 60 to NOW - 20 in each format, as the gateway writes it.
SAMPLES = {
    "postfix": b"Dec  3 09:59:00 mx1 postfix/smtpd[100]: connect from unknown[192.0.2.7]\n"
               b"Dec  3 09:59:40 mx1 postfix/smtpd[100]: disconnect from unknown[192.0.2.7] "
               b"quit=1 commands=1\n",
    "exim": b"2026-12-03 09:59:00 [1200] SMTP connection from [192.0.2.7]:1418 "
            b"I=[198.51.100.1]:25 (TCP/IP connection count = 1)\n"
            b"2026-12-03 09:59:40 [3001] SMTP connection from [192.0.2.7]:1418 "
            b"I=[198.51.100.1]:25 D=40s closed by QUIT\n",
    "sendmail": b"Dec  3 09:59:00 mx1 sm-mta[500]: 5B3A000001: from=<a@example.org>, size=10, "
                b"class=0, nrcpts=1, proto=ESMTP, daemon=MTA, relay=host.example.net "
                b"[192.0.2.7]\n"
                b"Dec  3 09:59:40 mx1 sm-mta[500]: 5B3A000001: lost input channel from "
                b"host.example.net [192.0.2.7] to MTA after rcpt\n",
    "cisco_esa": b"Thu Dec  3 09:59:00 2026 Info: New SMTP ICID 7 interface Data 1 "
                 b"(198.51.100.10) address 192.0.2.7 reverse dns host unknown verified no\n"
                 b"Thu Dec  3 09:59:40 2026 Info: ICID 7 close\n",
    "exchange": b"#Software: Microsoft Exchange Server\r\n#Version: 15.0.0.0\r\n"
                b"#Log-type: SMTP Receive Protocol Log\r\n#Date: 2026-12-03T09:00:04.113Z\r\n"
                b"#Fields: date-time,connector-id,session-id,sequence-number,local-endpoint,"
                b"remote-endpoint,event,data,context\r\n"
                b"2026-12-03T09:59:00.000Z,EXCH01\\Default Frontend EXCH01,08DE6A5B1C2D3E4F,0,"
                b"198.51.100.1:25,192.0.2.7:50123,+,,\r\n"
                b"2026-12-03T09:59:40.000Z,EXCH01\\Default Frontend EXCH01,08DE6A5B1C2D3E4F,9,"
                b"198.51.100.1:25,192.0.2.7:50123,-,,Local\r\n",
    "jsonl": b'{"time": "2026-12-03T09:59:00Z", "src": "192.0.2.7", "session": "s1", '
             b'"event": "connect"}\n'
             b'{"time": "2026-12-03T09:59:40Z", "src": "192.0.2.7", "session": "s1", '
             b'"event": "disconnect"}\n',
}  # fmt: skip
BOM = b"\xef\xbb\xbf"


@pytest.mark.parametrize("state", [False, True], ids=["full-read", "state-path"])
@pytest.mark.parametrize("fmt", SAMPLES)
def test_a_byte_order_mark_at_the_start_of_a_file_is_no_fault_in_any_format(tmp_path, fmt, state):
    results = []
    for name, data in (("plain", SAMPLES[fmt]), ("bom", BOM + SAMPLES[fmt])):
        (tmp_path / name).mkdir()
        path = tmp_path / name / "gateway.log"
        path.write_bytes(data)
        options = {"state_path": str(tmp_path / name / "state.json")} if state else {}
        results.append(_analyze([path], rules=ANY, **options))

    plain, bom = results
    assert bom["stats"]["format"] == fmt
    counted = ("lines", "parsed", "ignored", "skipped", "sessions", "repeated_lines")
    assert {key: bom["stats"][key] for key in counted} == {key: plain["stats"][key]
                                                             for key in counted}  # fmt: skip
    assert bom["stats"]["skipped"] == 0
    assert [(c["ip"], c["longest_session"]) for c in bom["candidates"]] == [("192.0.2.7", 40)]


WRONG_FORMATS = [
    pytest.param(actual, forced, id=f"{actual}-read-as-{forced}")
    for actual in SAMPLES
    for forced in SAMPLES
    if forced != actual
]


@pytest.mark.parametrize(("actual", "forced"), WRONG_FORMATS)
def test_every_forced_format_that_fits_no_file_fails_instead_of_an_all_clear(
    tmp_path, actual, forced
):
    path = tmp_path / "gateway.log"
    path.write_bytes(SAMPLES[actual])

    with pytest.raises(AnalysisError, match=rf"of a {forced} log, and they look like a {actual} "
                                            rf"log: set format to {actual}, or to auto"):
        _analyze([path], format=forced, rules=COND2)


def test_an_idle_log_of_the_forced_format_only_warns(tmp_path):
    path = tmp_path / "mainlog"
    path.write_bytes(b"2026-12-03 09:59:00 [1] Start queue run: pid=1\n"
                     b"2026-12-03 09:59:01 [1] End queue run: pid=1\n")  # fmt: skip
    warnings: list[str] = []

    result = _analyze([path], warnings, format="exim")

    assert result["stats"]["unmatched_files"] == [
        {"path": str(path), "format": "exim", "lines": 2, "looks_like": None}
    ]
    assert any("unless the gateway was idle" in text for text in warnings)


def test_a_file_of_another_format_in_a_recognised_family_is_named_in_a_warning(tmp_path):
    (tmp_path / "mainlog.1").write_bytes(SAMPLES["exim"])
    (tmp_path / "mainlog").write_bytes(SAMPLES["postfix"])
    warnings: list[str] = []

    result = _analyze([tmp_path / "mainlog*"], warnings, rules=ANY)

    assert result["stats"]["format"] == "exim"
    assert [file["looks_like"] for file in result["stats"]["unmatched_files"]] == ["postfix"]
    assert any("looks like a postfix log although its rotated family was recognised as exim"
               in text for text in warnings)  # fmt: skip
