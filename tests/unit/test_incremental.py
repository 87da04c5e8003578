"""state_path: a run that goes on from the last one gives what a full read gives.

Each case writes a log, runs the analysis with a state file, changes the log the way a gateway
and its log rotation do (lines appended, the live file renamed or compressed, a line finished,
the file truncated), runs again with the state and compares the result with a full read of
the same files without state.
"""

from __future__ import annotations

import gzip
import importlib.util
import itertools
import json
import os
from pathlib import Path

import pytest

from support.logs import NOW, PostfixLog, by_source, iso, run_analysis

ROOT = Path(__file__).resolve().parents[2]
RULES = [
    {"name": "cond1", "min_duration": 20, "min_sessions": 3, "min_risk": 0},
    {"name": "cond2", "min_duration": 200, "min_sessions": 1, "min_risk": 0},
    {"name": "any", "min_duration": 0, "min_sessions": 1, "min_risk": 0},
]


def _analysis(paths, *, state=None, now=NOW, **options):
    warnings: list[str] = []
    settings = {"window": "30m", "rules": RULES, **options}
    result = run_analysis(
        *paths, now=iso(now), state_path=state and str(state), warnings=warnings, **settings
    )
    return result, warnings


def _comparable(result: dict) -> dict:
    """The result without what differs by how it was reached: the run's time and state."""
    result = json.loads(json.dumps(result))
    result["stats"].pop("seconds")
    result.pop("state", None)
    return result


def _first_part(tmp_path) -> PostfixLog:
    log = PostfixLog()
    log.sessions("203.0.113.9", 6, start=NOW - 1500, duration=25, spacing=60)
    log.sessions("192.0.2.10", 5, start=NOW - 1700, duration=2, spacing=90)
    log.session("198.51.100.7", start=NOW - 2500, duration=None, pid=7000)  # slow post, open
    log.connect(NOW - 600, "192.0.2.20", pid=7001)  # ends in the second part
    log.connect(NOW - 500, "192.0.2.21", pid=7002)  # its pid connects again later
    log.line(NOW - 480, "NOQUEUE: reject: RCPT from unknown[192.0.2.21]: 554 denied", pid=7002)
    log.line(NOW - 470, "DNSBL rank 3 for [203.0.113.9]:4242", pid=5, program="postfix/postscreen")
    log.line(NOW - 460, "connect from unknown[not-an-address]", pid=7003)
    return log


def _second_part() -> PostfixLog:
    log = PostfixLog(first_pid=2000)
    log.disconnect(NOW - 300, "192.0.2.20", pid=7001)
    log.line(NOW - 290, "lost connection after DATA from unknown[192.0.2.21]", pid=7002)
    log.connect(NOW - 250, "192.0.2.22", pid=7002)
    log.disconnect(NOW - 240, "192.0.2.22", pid=7002)
    log.disconnect(NOW - 230, "192.0.2.99", pid=7100)  # its connect is in neither part
    log.sessions("203.0.113.9", 4, start=NOW - 200, duration=25, spacing=30)
    log.line(NOW - 100, "connect from unknown[not-an-address]", pid=7004)
    log.line(NOW - 90, "DNSBL rank 5 for [203.0.113.9]:4243", pid=5, program="postfix/postscreen")
    return log


def _append(path: Path, data: bytes) -> None:
    with open(path, "ab") as handle:
        handle.write(data)


def _live_grows(tmp_path, first, second):
    live = tmp_path / "mail.log"
    live.write_bytes(first)
    yield [tmp_path / "mail.log*"]
    _append(live, second)


def _rotated(tmp_path, first, second):
    """logrotate with delaycompress: the live file is renamed, a new one takes the rest."""
    live = tmp_path / "mail.log"
    live.write_bytes(first)
    yield [tmp_path / "mail.log*"]
    live.rename(tmp_path / "mail.log.1")
    live.write_bytes(second)


def _rotated_after_more_lines(tmp_path, first, second):
    """Lines land in the old file after the last run, then it rotates."""
    half = len(second.splitlines()) // 2
    lines = second.splitlines(keepends=True)
    live = tmp_path / "mail.log"
    live.write_bytes(first)
    yield [tmp_path / "mail.log*"]
    _append(live, b"".join(lines[:half]))
    live.rename(tmp_path / "mail.log.1")
    live.write_bytes(b"".join(lines[half:]))


def _rotated_and_compressed(tmp_path, first, second):
    """logrotate without delaycompress: the old file becomes mail.log.1.gz (a new inode)."""
    half = len(second.splitlines()) // 2
    lines = second.splitlines(keepends=True)
    live = tmp_path / "mail.log"
    live.write_bytes(first)
    yield [tmp_path / "mail.log*"]
    (tmp_path / "mail.log.1.gz").write_bytes(gzip.compress(first + b"".join(lines[:half])))
    live.write_bytes(b"".join(lines[half:]))


def _copied_again(tmp_path, first, second):
    """fetch_logs copies the gateway's file anew every cycle: a new inode, the same start."""
    live = tmp_path / "mail.log"
    live.write_bytes(first)
    yield [tmp_path / "mail.log"]
    live.unlink()
    live.write_bytes(first + second)


def _line_finished(tmp_path, first, second):
    """The last run saw a line still being written."""
    cut = len(first) + 20
    live = tmp_path / "mail.log"
    live.write_bytes((first + second)[:cut])
    yield [tmp_path / "mail.log"]
    _append(live, (first + second)[cut:])


def _two_gateways(tmp_path, first, second):
    mx1, mx2 = tmp_path / "mx1.log", tmp_path / "mx2.log"
    mx1.write_bytes(first)
    mx2.write_bytes(first.replace(b" mx1 ", b" mx2 "))
    yield [mx1, mx2]
    _append(mx1, second)
    _append(mx2, second.replace(b" mx1 ", b" mx2 "))


GOES_ON = [_live_grows, _rotated, _rotated_after_more_lines, _rotated_and_compressed,
           _copied_again, _line_finished, _two_gateways]  # fmt: skip


@pytest.mark.parametrize("change", GOES_ON, ids=lambda change: change.__name__.strip("_"))
def test_going_on_from_the_state_gives_the_full_reads_result(tmp_path, change):
    state = tmp_path / "state" / "analysis.json"
    steps = change(tmp_path, _first_part(tmp_path).data(), _second_part().data())
    paths = next(steps)
    _analysis(paths, state=state, now=NOW - 400)
    next(steps, None)

    resumed, warnings = _analysis(paths, state=state)
    full, _ = _analysis(paths)

    assert resumed["state"] == {"path": str(state), "resumed": True, "full_read": "",
                                "written": True}  # fmt: skip
    assert _comparable(resumed) == _comparable(full)
    assert not [warning for warning in warnings if "state_path" in warning]


def test_a_session_open_across_runs_is_one_session_of_its_whole_length(tmp_path):
    state, live = tmp_path / "state.json", tmp_path / "mail.log"
    PostfixLog().connect(NOW - 900, "203.0.113.5", pid=300).write(live)
    first, _ = _analysis([live], state=state, now=NOW - 600)
    _append(live, PostfixLog().disconnect(NOW - 100, "203.0.113.5", pid=300).data())

    second, _ = _analysis([live], state=state)

    assert by_source(first)["203.0.113.5"]["open_sessions"] == 1
    assert by_source(second)["203.0.113.5"]["longest_session"] == 800
    assert by_source(second)["203.0.113.5"]["open_sessions"] == 0
    assert second["stats"]["sessions"] == 1


def test_a_run_with_nothing_new_reads_nothing_and_moves_the_window(tmp_path):
    state, live = tmp_path / "state.json", tmp_path / "mail.log"
    log = PostfixLog()
    log.session("192.0.2.1", start=NOW - 2000, duration=10)
    log.session("192.0.2.2", start=NOW - 1000, duration=10)
    log.write(live)
    _analysis([live], state=state, now=NOW - 900)

    later, _ = _analysis([live], state=state, now=NOW)
    full, _ = _analysis([live], now=NOW)

    assert later["state"]["resumed"]
    assert _comparable(later) == _comparable(full)
    assert set(by_source(later)) == {"192.0.2.2"}


def _one_session(path, source, start):
    log = PostfixLog()
    log.session(source, start=start, duration=5)
    log.write(path)


def _copytruncate(tmp_path, live):
    _one_session(live, "192.0.2.3", NOW - 100)


def _older_file_added(tmp_path, live):
    _one_session(tmp_path / "mail.log.1", "192.0.2.5", NOW - 3000)


def _other_file(tmp_path, live):
    live.unlink()
    _one_session(live, "192.0.2.6", NOW - 100)


def _damaged_state(tmp_path, live):
    (tmp_path / "state.json").write_text("{not json")


def _nothing(tmp_path, live):
    pass


FULL_READS = [
    pytest.param(_copytruncate, {}, "is gone", id="copytruncate"),
    pytest.param(_other_file, {}, "is gone", id="file-replaced"),
    pytest.param(_older_file_added, {}, "older than a file that is new", id="older-file-added"),
    pytest.param(_nothing, {"timezone": "Asia/Tokyo"}, "timezone", id="other-timezone"),
    pytest.param(_nothing, {"window": "2h"}, "window reaches before", id="longer-window"),
    pytest.param(_nothing, {"now": NOW - 1000}, "window reaches before", id="earlier-now"),
    pytest.param(_damaged_state, {}, "unreadable", id="damaged-state"),
    pytest.param(_nothing, {"servers": ["10.0.0.5"]}, "servers", id="servers-set"),
]


@pytest.mark.parametrize(("change", "options", "reason"), FULL_READS)
def test_a_state_that_does_not_fit_the_files_falls_back_to_a_full_read(
    tmp_path, change, options, reason
):
    state, live = tmp_path / "state.json", tmp_path / "mail.log"
    _first_part(tmp_path).write(live)
    _analysis([tmp_path / "mail.log*"], state=state, now=NOW - 400)
    change(tmp_path, live)
    paths = [tmp_path / "mail.log*"]
    options = dict(options)
    now = options.pop("now", NOW)

    again, _ = _analysis(paths, state=state, now=now, **options)
    full, _ = _analysis(paths, now=now, **options)

    assert again["state"]["resumed"] is False
    assert reason in again["state"]["full_read"]
    assert _comparable(again) == _comparable(full)


def test_servers_set_after_a_run_without_them_count_the_deliveries_read_before(tmp_path):
    state, live = tmp_path / "state.json", tmp_path / "mail.log"
    log = PostfixLog()
    log.session("192.0.2.30", start=NOW - 900, duration=5, pid=700)
    log.line(NOW - 890, "3A1AF21E65F: to=<u@campus.example>, relay=mail.campus.example"
                        "[10.0.0.5]:25, delay=3.5, delays=0.5/0/1.2/1.8, dsn=2.0.0, status=sent "
                        "(250 2.0.0 Ok)", pid=900, program="postfix/smtp")  # fmt: skip
    log.write(live)
    _analysis([live], state=state, now=NOW - 600)
    _append(live, PostfixLog().connect(NOW - 100, "192.0.2.31", pid=701).data())

    again, _ = _analysis([live], state=state, servers=["10.0.0.5"])
    full, _ = _analysis([live], servers=["10.0.0.5"])

    assert again["state"]["resumed"] is False
    assert again["servers"][0]["sessions"] == full["servers"][0]["sessions"] == 1
    assert _comparable(again) == _comparable(full)


def test_check_mode_reads_the_state_but_does_not_write_it(tmp_path):
    state, live = tmp_path / "state.json", tmp_path / "mail.log"
    _first_part(tmp_path).write(live)

    checked, _ = _analysis([live], state=state, now=NOW - 400, check_mode=True)
    assert not state.exists()
    assert checked["state"]["written"] is False

    _analysis([live], state=state, now=NOW - 400)
    written = state.read_bytes()
    _append(live, _second_part().data())
    checked, _ = _analysis([live], state=state, check_mode=True)

    assert checked["state"]["resumed"] is True
    assert state.read_bytes() == written
    assert _comparable(checked) == _comparable(_analysis([live])[0])


def test_state_is_kept_as_it_was_when_lines_lie_after_now(tmp_path):
    state, live = tmp_path / "state.json", tmp_path / "mail.log"
    log = _first_part(tmp_path)
    log.session("192.0.2.30", start=NOW - 10, duration=5)
    log.write(live)

    result, warnings = _analysis([live], state=state, now=NOW - 400)

    assert result["stats"]["after_now"] > 0
    assert not state.exists()
    assert any("state_path kept as it was" in warning for warning in warnings)


def test_state_file_is_private_and_names_no_log_text_beyond_sources_and_keys(tmp_path):
    state, live = tmp_path / "state.json", tmp_path / "mail.log"
    _first_part(tmp_path).write(live)

    _analysis([live], state=state, now=NOW - 400)

    assert os.stat(state).st_mode & 0o777 == 0o600
    assert b"NOQUEUE" not in state.read_bytes()


def test_unwritable_state_path_fails_naming_it(tmp_path):
    from ansible_collections.campusnet.smtpguard.plugins.module_utils._analyze import (
        AnalysisError,
    )

    blocker = tmp_path / "file"
    blocker.write_text("")
    _first_part(tmp_path).write(tmp_path / "mail.log")

    with pytest.raises(AnalysisError, match="state_path .*file/state.json"):
        _analysis([tmp_path / "mail.log"], state=blocker / "state.json", now=NOW - 400)


def _gateway_lines(count: int) -> list[bytes]:
    """The benchmark's gateway log: ordinary mail and the five attack kinds, `count` lines."""
    spec = importlib.util.spec_from_file_location("genlog", ROOT / "benchmarks" / "genlog.py")
    genlog = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(genlog)
    lines = itertools.chain.from_iterable(genlog.generate(seed=11))
    return [line.encode() for line in itertools.islice(lines, count)]


# The paper's rules, cond1 scaled to the seven minutes of the generated log.
SCALED_RULES = [
    {"name": "cond1", "min_duration": 20, "min_sessions": 8, "min_risk": 95},
    {"name": "cond2", "min_duration": 200, "min_sessions": 1, "min_risk": 95},
    {"name": "cond3", "min_duration": 0, "min_sessions": 300, "min_risk": 0},
]


@pytest.mark.parametrize("cuts", [(20_000,), (30_000, 30_100, 45_000), (1, 2, 59_999)])
def test_a_mixed_gateway_log_read_in_pieces_gives_the_full_reads_result(tmp_path, cuts):
    lines = _gateway_lines(60_000)
    live, state = tmp_path / "mail.log", tmp_path / "state.json"
    options = {"now": None, "year": 2026, "timezone": "UTC", "rules": SCALED_RULES,
               "risk_source": "log", "postscreen_threshold": 3}  # fmt: skip
    live.write_bytes(b"")
    done = 0
    for cut in (*cuts, len(lines)):
        _append(live, b"".join(lines[done:cut]))
        done = cut
        resumed = run_analysis(live, state_path=str(state), **options)

    full = run_analysis(live, **options)

    assert resumed["state"]["resumed"] is True
    assert _comparable(resumed) == _comparable(full)
    assert {candidate["rule"] for candidate in full["candidates"]} == {"cond1", "cond2", "cond3"}
