"""Log files: globs, rotated families oldest first, gzip by magic, damaged archives."""

from __future__ import annotations

import gzip
import os

import pytest

from ansible_collections.campusnet.smtpguard.plugins.module_utils._analyze import AnalysisError
from ansible_collections.campusnet.smtpguard.plugins.module_utils._logfiles import (
    LogFileError,
    expand_paths,
    open_log,
    rotation_order,
    tail_lines,
)
from support.logs import NOW, PostfixLog, by_source, iso, run_analysis


def _touch(directory, *names):
    for name in names:
        (directory / name).write_bytes(b"")


def _names(families):
    return [[os.path.basename(log.path) for log in family.files] for family in families]


FAMILIES = [
    pytest.param(
        ["mail.log", "mail.log.1", "mail.log.2.gz", "mail.log.10.gz"],
        [["mail.log.10.gz", "mail.log.2.gz", "mail.log.1", "mail.log"]],
        id="numbered",
    ),
    pytest.param(
        ["mail.log", "mail.log.20261202-120000.gz", "mail.log.20261201-000000.gz"],
        [["mail.log.20261201-000000.gz", "mail.log.20261202-120000.gz", "mail.log"]],
        id="postfix-logrotate-dated",
    ),
    pytest.param(
        ["maillog", "maillog-20261201", "maillog-20261130.gz"],
        [["maillog-20261130.gz", "maillog-20261201", "maillog"]],
        id="logrotate-dateext",
    ),
    pytest.param(
        ["mail.log", "mail.log.0", "mail.log.1.gz"],
        [["mail.log.1.gz", "mail.log.0", "mail.log"]],
        id="newsyslog-from-zero",
    ),
    pytest.param(
        ["mail.log", "mail.log.1", "mail.err", "mail.err.1"],
        [["mail.err.1", "mail.err"], ["mail.log.1", "mail.log"]],
        id="two-families",
    ),
]


@pytest.mark.parametrize(("files", "families"), FAMILIES)
def test_glob_groups_rotated_families_oldest_first(tmp_path, files, families):
    _touch(tmp_path, *files)

    assert _names(expand_paths([str(tmp_path / "*")])) == families


@pytest.mark.parametrize(
    ("name", "base", "older_than_live"),
    [
        (b"/var/log/mail.log", b"/var/log/mail.log", False),
        (b"/var/log/mail.log.1", b"/var/log/mail.log", True),
        (b"/var/log/mail.log.3.gz", b"/var/log/mail.log", True),
        (b"/var/log/mail.log.20261203-161500.gz", b"/var/log/mail.log", True),
        (b"/var/log/mail.log-20261203", b"/var/log/mail.log", True),
        (b"/srv/2016.05.12/maillog", b"/srv/2016.05.12/maillog", False),
    ],
)
def test_rotation_order_names_the_family_and_place(name, base, older_than_live):
    family, order = rotation_order(name)

    assert family == base
    assert (order < rotation_order(base)[1]) is older_than_live


def test_paths_in_separate_directories_are_separate_families(tmp_path):
    for gateway in ("gw1", "gw2"):
        (tmp_path / gateway).mkdir()
        _touch(tmp_path / gateway, "mail.log", "mail.log.1")

    families = expand_paths([str(tmp_path / "gw*" / "mail.log*")])

    assert [family.base for family in families] == [
        str(tmp_path / "gw1" / "mail.log"),
        str(tmp_path / "gw2" / "mail.log"),
    ]
    assert _names(families) == [["mail.log.1", "mail.log"]] * 2


def test_a_file_named_twice_is_read_once(tmp_path):
    _touch(tmp_path, "mail.log")

    families = expand_paths([str(tmp_path / "mail.log"), str(tmp_path / "mail.*")])

    assert _names(families) == [["mail.log"]]


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        pytest.param("missing.log", "log file {path!r} does not exist", id="missing-file"),
        pytest.param("nothing-*.log", "the pattern {path!r} matches no file", id="empty-glob"),
        pytest.param("logs", "{path!r} is a directory", id="directory"),
        pytest.param(
            "log[s]", "the pattern {path!r} matches only directories", id="glob-of-directories"
        ),
    ],
)
def test_paths_that_are_not_log_files_fail_naming_them(tmp_path, pattern, message):
    (tmp_path / "logs").mkdir()
    path = str(tmp_path / pattern)

    with pytest.raises(LogFileError) as caught:
        expand_paths([path])

    assert message.format(path=path) in str(caught.value)


def test_missing_path_fails_the_analysis_naming_it(tmp_path):
    _touch(tmp_path, "mail.log")
    missing = str(tmp_path / "mail.log.9.gz")

    with pytest.raises(AnalysisError, match=f"log file '{missing}' does not exist"):
        run_analysis(tmp_path / "mail.log", missing)


def test_glob_skips_directories_among_files(tmp_path):
    (tmp_path / "mail.d").mkdir()
    _touch(tmp_path, "mail.log")

    assert _names(expand_paths([str(tmp_path / "mail*")])) == [["mail.log"]]


def test_session_open_in_an_old_gzip_closing_in_the_live_file_is_one_session(tmp_path):
    old = PostfixLog()
    old.session("192.0.2.1", start=NOW - 900, duration=30)
    old.connect(NOW - 700, "198.51.100.7", pid=100)
    middle = PostfixLog()
    middle.line(NOW - 500, "NOQUEUE: reject: RCPT from unknown[198.51.100.7]: 554 denied", pid=100)
    live = PostfixLog()
    live.line(NOW - 400, "4ZxYvb1234zC9q: removed", pid=55, program="postfix/qmgr")
    live.disconnect(NOW - 380, "198.51.100.7", pid=100)
    old.write(tmp_path / "mail.log.2.gz", compress=True)
    middle.write(tmp_path / "mail.log.1")
    live.write(tmp_path / "mail.log")

    result = run_analysis(tmp_path / "mail.log*")

    assert by_source(result)["198.51.100.7"]["longest_session"] == 320
    assert by_source(result)["198.51.100.7"]["sessions"] == 1
    assert result["stats"]["start_unknown"] == 0
    assert result["stats"]["ended_unknown"] == 0
    assert result["stats"]["sessions"] == 2
    assert [os.path.basename(path) for path in result["stats"]["files"]] == [
        "mail.log.2.gz",
        "mail.log.1",
        "mail.log",
    ]


@pytest.mark.parametrize(
    ("name", "compress"),
    [("mail.log.1", True), ("mail.log", True), ("mail.log.1.gz", False), ("mail.log.gz", True)],
)
def test_gzip_is_recognised_by_its_magic_not_its_name(tmp_path, name, compress):
    log = PostfixLog()
    log.session("192.0.2.1", start=NOW - 100, duration=42)
    path = log.write(tmp_path / name, compress=compress)

    result = run_analysis(path, now=None)

    assert by_source(result)["192.0.2.1"]["longest_session"] == 42
    assert result["stats"]["window_end"] == iso(NOW - 58)


def _truncated_gzip(tmp_path, *, sessions=400):
    """A gzip cut off halfway: its first half of `sessions` sessions can be read."""
    log = PostfixLog()
    log.sessions("192.0.2.1", sessions, start=NOW - 1000, duration=2)
    data = gzip.compress(log.data())
    path = tmp_path / "mail.log.1.gz"
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.mark.parametrize("now", ["2026-12-03T10:00:00+00:00", None])
def test_truncated_gzip_keeps_the_lines_before_the_damage_and_warns(tmp_path, now):
    path = _truncated_gzip(tmp_path)
    warnings: list[str] = []

    result = run_analysis(path, format="postfix", now=now, warnings=warnings)

    assert 0 < result["stats"]["sessions"] < 400
    assert (
        result["stats"]["lines"]
        == result["stats"]["parsed"]
        + result["stats"]["ignored"]
        + result["stats"]["skipped"]
        + result["stats"]["after_now"]
    )
    assert any(str(path) in warning and "stopped reading" in warning for warning in warnings)


def test_short_truncated_gzip_with_format_auto_is_still_read(tmp_path):
    # Damage within the first 200 lines, which format detection reads.
    path = _truncated_gzip(tmp_path, sessions=40)

    result = run_analysis(path, format="auto")

    assert result["stats"]["sessions"] > 0


def test_tail_of_a_truncated_gzip_is_its_last_lines_before_the_damage(tmp_path):
    path = _truncated_gzip(tmp_path)

    lines = tail_lines(str(path))

    assert lines
    assert all(line.startswith(b"Dec  3 09:") for line in lines[:-1])


@pytest.mark.parametrize("compress", [True, False])
def test_open_log_closes_the_file_it_opened(tmp_path, compress):
    path = PostfixLog().write(tmp_path / "mail.log", compress=compress)
    handle = open_log(str(path))
    raw = getattr(handle, "myfileobj", None) or getattr(handle, "fileobj", None) or handle

    handle.close()

    assert raw.closed


def test_sessions_open_where_a_gzip_breaks_off_do_not_pair_across_the_gap(tmp_path):
    # Slow sessions on pids 1..60 run through the damaged part; the live file reuses the
    # same pids for short sessions. Pairing across the gap would make them 5-minute sessions.
    older = PostfixLog(first_pid=0)
    for pid in range(1, 61):
        older.connect(NOW - 900 + pid, "203.0.113.7", pid=pid)
    older.sessions("192.0.2.1", 3000, start=NOW - 840, duration=1, spacing=0.1)
    data = gzip.compress(older.data())
    (tmp_path / "mail.log.1.gz").write_bytes(data[: len(data) // 3])
    live = PostfixLog(first_pid=0)
    for pid in range(1, 61):
        live.disconnect(NOW - 300 + pid, "203.0.113.7", pid=pid)
    live.write(tmp_path / "mail.log")
    warnings: list[str] = []

    result = run_analysis(
        tmp_path / "mail.log.1.gz", tmp_path / "mail.log", format="postfix", warnings=warnings
    )

    assert result["stats"]["ended_unknown"] >= 60
    assert by_source(result)["203.0.113.7"]["longest_session"] < 200
    assert any("broke off" in warning for warning in warnings)
