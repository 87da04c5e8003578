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
        ["mail_logs.@20261203T101530.c", "mail_logs.@20261201T000000.s",
         "mail_logs.@20261202T120000.s"],
        [["mail_logs.@20261201T000000.s", "mail_logs.@20261202T120000.s",
          "mail_logs.@20261203T101530.c"]],
        id="asyncos-rollover",
    ),
    pytest.param(
        ["mail.@20261202T120000.s", "mail.current"],
        [["mail.@20261202T120000.s", "mail.current"]],
        id="asyncos-current",
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
        (b"/esa/mail_logs.@20261203T101530.s", b"/esa/mail_logs", True),
        (b"/esa/mail_logs.@20261203T101530.current", b"/esa/mail_logs", True),
        (b"/esa/mail_logs.current", b"/esa/mail_logs", False),
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


# -- logs whose lines name no host ---------------------------------------------------------------

# Two gateways' own files, whose lines name no host: (format, file name, the first gateway's
# line opening a session of 192.0.2.9 at 09:10, the second's line of the same session key at
# 09:51, which must not end it).
HOSTLESS = {
    "cisco_esa": ("cisco_esa", "mail_logs",
                  b"Thu Dec  3 09:10:00 2026 Info: New SMTP ICID 100 interface Data 1 "
                  b"(198.51.100.10) address 192.0.2.9 reverse dns host unknown verified no",
                  b"Thu Dec  3 09:51:00 2026 Info: ICID 100 close"),
    "postfix maillog_file": ("postfix", "mail.log",
                             b"Dec 03 09:10:00 postfix/smtpd[100]: connect from unknown[192.0.2.9]",
                             b"Dec 03 09:51:00 postfix/smtpd[100]: disconnect from "
                             b"unknown[203.0.113.7]"),
    "exim": ("exim", "mainlog",
             b"2026-12-03 09:10:00 SMTP connection from [192.0.2.9]:1400 I=[198.51.100.1]:25 "
             b"(TCP/IP connection count = 1)",
             b"2026-12-03 09:51:00 SMTP connection from [192.0.2.9]:1400 I=[198.51.100.2]:25 "
             b"closed by QUIT"),
    "sendmail": ("sendmail", "maillog",
                 b"Dec  3 09:10:00 sm-mta[200]: STARTTLS=server, relay=x [192.0.2.9], "
                 b"version=TLSv1.3, verify=NO, cipher=TLS_AES_256_GCM_SHA384, bits=256/256",
                 b"Dec  3 09:51:00 sm-mta[200]: w23NZFZk014901: lost input channel from y "
                 b"[203.0.113.7] to MTA after rcpt"),
}  # fmt: skip


@pytest.mark.parametrize(("fmt", "name", "first", "second"), HOSTLESS.values(), ids=HOSTLESS)
def test_logs_without_hosts_keep_their_sessions_apart_by_rotated_family(tmp_path, fmt, name,
                                                                       first, second):
    for gateway, line in (("gw1", first), ("gw2", second)):
        (tmp_path / gateway).mkdir()
        (tmp_path / gateway / name).write_bytes(line + b"\n")

    result = run_analysis(tmp_path / "gw*" / name, format=fmt, window=86400.0)

    session = by_source(result)["192.0.2.9"]
    assert (session["open_sessions"], session["longest_session"]) == (1, 3000)
    assert result["stats"]["ended_unknown"] == 0


@pytest.mark.parametrize(("fmt", "name", "first", "second"), HOSTLESS.values(), ids=HOSTLESS)
def test_a_session_without_host_open_across_state_path_runs_ends_in_its_own_family(
    tmp_path, fmt, name, first, second
):
    state = tmp_path / "state.json"
    for gateway in ("gw1", "gw2"):
        (tmp_path / gateway).mkdir()
    (tmp_path / "gw1" / name).write_bytes(first + b"\n")
    (tmp_path / "gw2" / name).write_bytes(second + b"\n")
    options = {"format": fmt, "window": 86400.0}
    run_analysis(tmp_path / "gw*" / name, state_path=str(state), **options)
    end = {"cisco_esa": b"Thu Dec  3 09:55:00 2026 Info: ICID 100 close",
           "postfix": b"Dec 03 09:55:00 postfix/smtpd[100]: disconnect from unknown[192.0.2.9]",
           "exim": b"2026-12-03 09:55:00 SMTP connection from [192.0.2.9]:1400 "
                   b"I=[198.51.100.1]:25 closed by QUIT",
           "sendmail": b"Dec  3 09:55:00 sm-mta[200]: w23NZFZk014900: lost input channel from x "
                       b"[192.0.2.9] to MTA after rcpt"}[fmt]  # fmt: skip
    with open(tmp_path / "gw1" / name, "ab") as handle:
        handle.write(end + b"\n")

    again = run_analysis(tmp_path / "gw*" / name, state_path=str(state), **options)
    full = run_analysis(tmp_path / "gw*" / name, **options)

    assert again["state"]["resumed"] is True
    assert by_source(again)["192.0.2.9"]["longest_session"] == 2700
    assert by_source(again) == by_source(full)


def test_a_log_moved_elsewhere_since_the_state_was_written_is_read_in_full(tmp_path):
    fmt, name, first, _ = HOSTLESS["cisco_esa"]
    state, old, new = tmp_path / "state.json", tmp_path / "old", tmp_path / "new"
    old.mkdir()
    (old / name).write_bytes(first + b"\n")
    run_analysis(old / name, format=fmt, state_path=str(state))
    old.rename(new)
    with open(new / name, "ab") as handle:
        handle.write(b"Thu Dec  3 09:55:00 2026 Info: ICID 100 close\n")

    again = run_analysis(new / name, format=fmt, state_path=str(state))

    assert "in another place" in again["state"]["full_read"]
    assert by_source(again)["192.0.2.9"]["longest_session"] == 2700


# -- the same log under two names ---------------------------------------------------------------


def _copy_of(data: bytes) -> bytes:
    return data


def _other_gateway(data: bytes) -> bytes:
    return data.replace(b" mx1 ", b" mx2 ")  # the same size, another log


def _changed_at_the_end(data: bytes) -> bytes:
    return data[:-2] + b"9\n"  # the same size and beginning, another last line


COPIES = [
    pytest.param(_copy_of, True, id="byte-identical-copy"),
    pytest.param(_other_gateway, False, id="same-size-other-log"),
    pytest.param(_changed_at_the_end, False, id="same-beginning-other-end"),
]


@pytest.mark.parametrize(("second", "copy"), COPIES)
def test_a_copy_of_a_log_under_another_name_is_read_once_and_named(tmp_path, second, copy):
    log = PostfixLog()
    log.sessions("192.0.2.1", 200, start=NOW - 900, duration=30)  # beyond the 4 KiB compared
    data = log.data()
    (tmp_path / "mail.log").write_bytes(data)
    (tmp_path / "copy.log").write_bytes(second(data))
    warnings: list[str] = []

    result = run_analysis(tmp_path / "mail.log", tmp_path / "copy.log", warnings=warnings)

    said = [warning for warning in warnings if "same content" in warning]
    if copy:
        assert by_source(result)["192.0.2.1"]["sessions"] == 200
        assert [os.path.basename(path) for path in result["stats"]["files"]] == ["copy.log"]
        assert len(said) == 1 and "mail.log" in said[0] and "copy.log" in said[0]
    else:
        assert len(result["stats"]["files"]) == 2
        assert said == []


def _log_of(client: str, count: int, start: float) -> bytes:
    log = PostfixLog()
    log.sessions(client, count, start=start, duration=30)  # beyond the 4 KiB compared
    return log.data()


OTHER = b"Dec  3 09:59:59 mx1 postfix/pickup[3]: keeps the log going\n"
# (files as name -> bytes made of the log's text, the files read, 192.0.2.1's sessions);
# copies hold only lines another file holds too: compressed, grown, or halfway compressed.
LATER_COPIES = {
    "compressed copy": ({"mail.log": lambda data: data,
                         "mail.log.old.gz": lambda data: gzip.compress(data)}, ["mail.log"], 200),
    "grown copy": ({"mail.log": lambda data: data, "mail.log.bak": lambda data: data + OTHER},
                   ["mail.log.bak"], 200),
    "rotated file and its gzip": ({"mail.log.1": lambda data: data,
                                   "mail.log.1.gz": lambda data: gzip.compress(data),
                                   "mail.log": lambda data: OTHER},
                                  ["mail.log.1", "mail.log"], 200),
    "rotated file and its gzip halfway": ({"mail.log.1": lambda data: data,
                                           "mail.log.1.gz": lambda data: gzip.compress(data)[:-900],
                                           "mail.log": lambda data: OTHER},
                                          ["mail.log.1", "mail.log"], 200),
}  # fmt: skip


@pytest.mark.parametrize(("files", "read", "sessions"), LATER_COPIES.values(), ids=LATER_COPIES)
def test_a_compressed_or_grown_copy_is_read_once_and_named(tmp_path, files, read, sessions):
    data = _log_of("192.0.2.1", 200, NOW - 900)
    for name, content in files.items():
        (tmp_path / name).write_bytes(content(data))
    warnings: list[str] = []

    result = run_analysis(*(tmp_path / name for name in files), warnings=warnings)

    said = [warning for warning in warnings if "same content" in warning]
    assert by_source(result)["192.0.2.1"]["sessions"] == sessions
    assert [os.path.basename(path) for path in result["stats"]["files"]] == read
    dropped = set(files) - set(read)
    assert len(said) == len(dropped)
    assert all(name in said[0] for name in dropped | {read[0]})


def _same_start_other_lines(data: bytes) -> bytes:
    return data[:6000] + _log_of("192.0.2.2", 50, NOW - 600)  # the same first 4 KiB


def _same_start_shorter(data: bytes) -> bytes:
    return data[: data.index(b"\n", 8000) + 1] + OTHER  # shorter, its last line another


NOT_COPIES = [
    pytest.param(_same_start_other_lines, id="same-first-4-KiB-other-lines"),
    pytest.param(_same_start_shorter, id="shorter-with-another-last-line"),
    pytest.param(lambda data: gzip.compress(_same_start_shorter(data)), id="gzip-of-another"),
]


@pytest.mark.parametrize("other", NOT_COPIES)
def test_a_log_that_only_begins_like_another_is_no_copy(tmp_path, other):
    data = _log_of("192.0.2.1", 200, NOW - 900)
    (tmp_path / "mail.log").write_bytes(data)
    (tmp_path / "other.log").write_bytes(other(data))
    warnings: list[str] = []

    result = run_analysis(tmp_path / "mail.log", tmp_path / "other.log", warnings=warnings)

    assert len(result["stats"]["files"]) == 2
    assert [warning for warning in warnings if "same content" in warning] == []


def test_empty_files_are_no_copies_of_each_other(tmp_path):
    _touch(tmp_path, "mail.log", "other.log")
    warnings: list[str] = []

    result = run_analysis(tmp_path / "mail.log", tmp_path / "other.log", warnings=warnings)

    assert len(result["stats"]["files"]) == 2


def test_an_esa_session_across_a_rollover_is_one_session(tmp_path):
    """AsyncOS saves mail_logs.@<start>.s at a rollover and writes on in a new .c file: one
    log, so a connection opened before the rollover closes in the next file."""
    (tmp_path / "mail_logs.@20261203T080000.s").write_bytes(
        b"Thu Dec  3 09:10:00 2026 Info: New SMTP ICID 100 interface Data 1 (198.51.100.10) "
        b"address 192.0.2.9 reverse dns host unknown verified no\n"
    )
    (tmp_path / "mail_logs.@20261203T093000.c").write_bytes(
        b"Thu Dec  3 09:51:00 2026 Info: ICID 100 close\n"
    )

    result = run_analysis(tmp_path / "mail_logs.*", format="cisco_esa", window=86400.0)

    session = by_source(result)["192.0.2.9"]
    assert (session["sessions"], session["open_sessions"]) == (1, 0)
    assert session["longest_session"] == 2460
