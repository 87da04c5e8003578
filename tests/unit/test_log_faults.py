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


def test_a_forced_format_that_does_not_fit_warns_naming_the_file(tmp_path):
    log = _jsonl(tmp_path / "edge.jsonl", [(NOW - 400, "198.51.100.9", "e1", "connect", None)])
    postfix = PostfixLog()
    postfix.session("192.0.2.1", start=NOW - 500, duration=10)
    path = postfix.write(tmp_path / "mail.log")
    warnings: list[str] = []

    with pytest.raises(AnalysisError):  # no line of the JSON file is a Postfix line at all
        _analyze([log], format="postfix")
    _analyze([path], warnings, format="exim")

    assert any("mail.log" in text and "exim" in text and "check the format" in text
               for text in warnings)  # fmt: skip


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
