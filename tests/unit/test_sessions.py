"""Pairing session events into sessions: keys, pid reuse, open sessions, the window."""

from __future__ import annotations

import pytest

from ansible_collections.campusnet.smtpguard.plugins.module_utils._sessions import SessionBook
from support.logs import NOW, PostfixLog, by_source, read_log, run_analysis, sessions_of


def _same_pid_two_hosts(log: PostfixLog) -> None:
    log.connect(NOW - 100, "192.0.2.1", pid=100, host="mx1")
    log.connect(NOW - 90, "192.0.2.2", pid=100, host="mx2")
    log.disconnect(NOW - 70, "192.0.2.1", pid=100, host="mx1")
    log.disconnect(NOW - 30, "192.0.2.2", pid=100, host="mx2")


def _same_pid_two_programs(log: PostfixLog) -> None:
    log.connect(NOW - 100, "192.0.2.1", pid=100, program="postfix/smtpd")
    log.connect(NOW - 90, "192.0.2.2", pid=100, program="postfix/submission/smtpd")
    log.disconnect(NOW - 70, "192.0.2.1", pid=100, program="postfix/smtpd")
    log.disconnect(NOW - 30, "192.0.2.2", pid=100, program="postfix/submission/smtpd")


def _same_pid_two_instances(log: PostfixLog) -> None:
    log.connect(NOW - 100, "192.0.2.1", pid=100, program="postfix/smtpd")
    log.connect(NOW - 90, "192.0.2.2", pid=100, program="postfix-out/smtpd")
    log.disconnect(NOW - 70, "192.0.2.1", pid=100, program="postfix/smtpd")
    log.disconnect(NOW - 30, "192.0.2.2", pid=100, program="postfix-out/smtpd")


@pytest.mark.parametrize(
    "build", [_same_pid_two_hosts, _same_pid_two_programs, _same_pid_two_instances]
)
def test_sessions_are_keyed_by_host_program_and_pid(build):
    log = PostfixLog()
    build(log)

    book, _ = read_log(log)

    assert sessions_of(book) == {"192.0.2.1": (1, 30.0, 0), "192.0.2.2": (1, 60.0, 0)}
    assert book.counts["ended_unknown"] == 0


PID_REUSE = [
    pytest.param([], 0.0, id="nothing-after-connect"),
    pytest.param(
        [(12, "NOQUEUE: reject: RCPT from unknown[192.0.2.1]: 554 5.7.1 denied")],
        12.0,
        id="last-seen-line",
    ),
    pytest.param(
        [
            (5, "4ZxYvb1234zC9q: client=unknown[192.0.2.1]"),
            (21, "warning: unknown[192.0.2.1]: SASL LOGIN authentication failed"),
        ],
        21.0,
        id="last-of-several-lines",
    ),
    pytest.param(
        [(15, "lost connection after RCPT from unknown[192.0.2.1]")], 15.0, id="lost-connection"
    ),
    pytest.param(
        [
            (15, "timeout after DATA from unknown[192.0.2.1]"),
            (25, "warning: hostname unknown does not resolve"),
        ],
        15.0,
        id="ending-line-wins-over-later-lines",
    ),
]


@pytest.mark.parametrize(("lines", "old_length"), PID_REUSE)
def test_new_connect_on_a_busy_pid_ends_the_old_session_where_it_was_last_seen(lines, old_length):
    log = PostfixLog()
    log.connect(NOW - 200, "192.0.2.1", pid=100)
    for offset, message in lines:
        log.line(NOW - 200 + offset, message, pid=100)
    log.connect(NOW - 100, "192.0.2.2", pid=100)
    log.disconnect(NOW - 90, "192.0.2.2", pid=100)

    book, _ = read_log(log)

    assert sessions_of(book) == {"192.0.2.1": (1, old_length, 0), "192.0.2.2": (1, 10.0, 0)}
    assert book.counts["ended_unknown"] == 1
    assert book.counts["sessions"] == 2
    # The old session leaves the occupancy where it ended, not at the new connect.
    assert book.deltas[NOW - 200 + old_length] <= 0


def test_lines_of_another_pid_do_not_extend_a_session():
    log = PostfixLog()
    log.connect(NOW - 200, "192.0.2.1", pid=100)
    log.line(NOW - 150, "NOQUEUE: reject: RCPT from unknown[192.0.2.9]: 554 denied", pid=101)
    log.connect(NOW - 100, "192.0.2.2", pid=100)

    book, _ = read_log(log)

    assert sessions_of(book)["192.0.2.1"] == (1, 0.0, 0)


@pytest.mark.parametrize(("age", "still_open"), [(1, 1), (100, 1), (5000, 1)])
def test_session_open_at_now_counts_with_its_age(age, still_open):
    log = PostfixLog()
    log.connect(NOW - age, "192.0.2.1", pid=100)

    book, _ = read_log(log, window=1800)

    assert sessions_of(book) == {"192.0.2.1": (1, float(age), still_open)}
    assert book.counts["open_sessions"] == 1
    # Still open at now: it enters the occupancy and never leaves it.
    assert sum(book.deltas.values()) == 1


def test_disconnect_without_a_seen_connect_starts_at_the_first_line_read():
    log = PostfixLog()
    log.line(NOW - 300, "4ZxYvb1234zC9q: removed", pid=55, program="postfix/qmgr")
    log.connect(NOW - 280, "192.0.2.2", pid=101)
    log.disconnect(NOW - 255, "192.0.2.1", pid=100)
    log.disconnect(NOW - 250, "192.0.2.2", pid=101)

    book, _ = read_log(log)

    assert sessions_of(book) == {"192.0.2.1": (1, 45.0, 0), "192.0.2.2": (1, 30.0, 0)}
    assert book.counts["start_unknown"] == 1


def test_unseen_start_on_one_gateway_is_not_stretched_by_another_gateways_older_log(tmp_path):
    older = PostfixLog(host="mx1")
    older.session("192.0.2.1", start=NOW - 3000, duration=5)
    newer = PostfixLog(host="mx2")
    newer.line(NOW - 600, "4ZxYvb1234zC9q: removed", pid=55, program="postfix/qmgr")
    newer.disconnect(NOW - 590, "192.0.2.2", pid=100)
    older.write(tmp_path / "mx1.log")
    newer.write(tmp_path / "mx2.log")

    result = run_analysis(tmp_path / "mx1.log", tmp_path / "mx2.log", window="1h")

    assert by_source(result)["192.0.2.2"]["longest_session"] == 10
    assert by_source(result)["192.0.2.1"]["longest_session"] == 5


def test_unseen_start_in_a_rotated_family_begins_at_the_familys_first_line(tmp_path):
    older = PostfixLog()
    older.line(NOW - 1500, "4ZxYvb1234zC9q: removed", pid=55, program="postfix/qmgr")
    older.session("192.0.2.1", start=NOW - 1400, duration=5)
    live = PostfixLog()
    live.line(NOW - 600, "4ZxYvb1234zC9q: removed", pid=55, program="postfix/qmgr")
    live.disconnect(NOW - 590, "192.0.2.2", pid=100)  # its connect is in neither file
    older.write(tmp_path / "mail.log.1")
    live.write(tmp_path / "mail.log")

    result = run_analysis(tmp_path / "mail.log*", window="1h")

    assert by_source(result)["192.0.2.2"]["longest_session"] == 910
    assert result["stats"]["start_unknown"] == 1


WINDOW = [
    # (start, end) relative to now, window of 600 s: counted?, duration
    pytest.param(-900, -500, True, 400, id="starts-before-ends-inside"),
    pytest.param(-900, -600, True, 300, id="ends-on-window-start"),
    pytest.param(-900, -601, False, None, id="ends-just-before"),
    pytest.param(-2000, -700, False, None, id="entirely-before"),
    pytest.param(-300, -200, True, 100, id="entirely-inside"),
    pytest.param(-900, None, True, 900, id="open-across-window"),
]


@pytest.mark.parametrize(("start", "end", "counted", "duration"), WINDOW)
def test_session_counts_when_any_part_lies_in_the_window(start, end, counted, duration):
    log = PostfixLog(style="rfc3339")
    log.session("192.0.2.1", start=NOW + start, duration=None if end is None else end - start)

    book, _ = read_log(log, window=600)

    if counted:
        assert sessions_of(book) == {"192.0.2.1": (1, float(duration), int(end is None))}
        assert book.counts["sessions"] == 1
        # It enters the occupancy no earlier than the window's start.
        assert min(book.deltas) == max(NOW + start, NOW - 600)
    else:
        assert book.sources == {}
        assert book.counts["sessions"] == 0
        assert book.deltas == {}


@pytest.mark.parametrize(
    ("build", "expected", "after_now"),
    [
        pytest.param(
            lambda log: (
                log.connect(NOW - 10, "192.0.2.1", pid=100),
                log.disconnect(NOW + 10, "192.0.2.1", pid=100),
            ),
            {"192.0.2.1": (1, 10.0, 1)},
            1,
            id="disconnect-after-now-leaves-it-open",
        ),
        pytest.param(
            lambda log: (
                log.connect(NOW + 5, "192.0.2.1", pid=100),
                log.disconnect(NOW + 50, "192.0.2.1", pid=100),
            ),
            {},
            2,
            id="session-after-now-is-not-seen",
        ),
        pytest.param(
            lambda log: (
                log.connect(NOW - 30, "192.0.2.1", pid=100),
                log.connect(NOW + 5, "192.0.2.2", pid=100),
            ),
            {"192.0.2.1": (1, 30.0, 1)},
            1,
            id="pid-reuse-after-now-does-not-end-it",
        ),
    ],
)
def test_events_after_now_are_ignored(build, expected, after_now):
    log = PostfixLog()
    build(log)

    book, stats = read_log(log)

    assert sessions_of(book) == expected
    assert stats.after_now == after_now


def test_thresholds_count_sessions_at_least_as_long_as_each():
    book = SessionBook(window_start=NOW - 3600, now=NOW, thresholds=(0.0, 20.0, 200.0))
    book.begin_stream(NOW - 3600)
    for pid, length in enumerate((5, 19, 20, 199, 200, 250)):
        book.connect(("mx1", pid), NOW - 1000, "192.0.2.1")
        book.disconnect(("mx1", pid), NOW - 1000 + length, "192.0.2.1")
    book.finish()

    assert book.sources["192.0.2.1"] == [6, 250, 0, 6, 4, 2]


def test_an_end_line_without_a_start_read_twice_counts_once():
    log = PostfixLog()
    log.line(NOW - 100, "connect from unknown[192.0.2.9]", pid=300)  # where the file starts
    for _ in range(3):
        log.disconnect(NOW - 40, "192.0.2.1", pid=100)

    book, stats = read_log(log)

    assert sessions_of(book)["192.0.2.1"] == (1, 60.0, 0)
    assert (book.counts["start_unknown"], book.counts["repeated_lines"]) == (1, 2)
    assert stats.parsed == 4


def test_a_pid_that_ends_again_after_a_new_start_is_a_second_session_not_a_repeat():
    book = SessionBook(window_start=NOW - 3600, now=NOW, thresholds=(0.0,))
    book.begin_stream(NOW - 100)
    book.disconnect(b"mx1 smtpd[100", NOW - 40, "192.0.2.1")
    book.connect(b"mx1 smtpd[100", NOW - 40, "192.0.2.2")
    book.disconnect(b"mx1 smtpd[100", NOW - 40, "192.0.2.2")
    book.finish()

    assert sessions_of(book) == {"192.0.2.1": (1, 60.0, 0), "192.0.2.2": (1, 0.0, 0)}
    assert book.counts["repeated_lines"] == 0
