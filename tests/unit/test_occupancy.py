"""Occupancy: the sweep over session intervals, and the trigger, alert and force gates."""

from __future__ import annotations

import pytest

from ansible_collections.campusnet.smtpguard.plugins.module_utils._occupancy import sweep
from support.logs import NOW, PostfixLog, iso, run_analysis


def _deltas(intervals, *, start):
    """Deltas the way SessionBook builds them: +1 where a session begins or enters the
    window, -1 where it ends (None: still open)."""
    deltas: dict[float, int] = {}
    for begin, end in intervals:
        begin = max(begin, start)
        deltas[begin] = deltas.get(begin, 0) + 1
        if end is not None:
            deltas[end] = deltas.get(end, 0) - 1
    return deltas


SWEEPS = [
    # intervals in a window [0, 100], capacity 10:
    # peak sessions, peak_at, mean sessions, current sessions
    pytest.param([], 0, 0, 0.0, 0, id="empty"),
    pytest.param([(10, 20)], 1, 10, 0.1, 0, id="one-session"),
    pytest.param([(10, 30), (20, 40)], 2, 20, 0.4, 0, id="overlap"),
    pytest.param([(10, 20), (20, 30)], 1, 10, 0.2, 0, id="end-and-start-at-one-time"),
    pytest.param([(50, 50)], 0, 0, 0.0, 0, id="zero-length"),
    pytest.param([(50, None)], 1, 50, 0.5, 1, id="open-at-end"),
    pytest.param([(-50, 10)], 1, 0, 0.1, 0, id="enters-at-window-start"),
    pytest.param(
        [(10, 60), (20, 70), (30, None), (65, None)], 3, 30, 2.05, 2, id="two-peaks-first-wins"
    ),
    pytest.param([(0, 100)] * 10, 10, 0, 10.0, 0, id="full-whole-window"),
]


@pytest.mark.parametrize(("intervals", "peak", "peak_at", "mean", "current"), SWEEPS)
def test_sweep_measures_peak_mean_and_current(intervals, peak, peak_at, mean, current):
    result = sweep(
        _deltas(intervals, start=0), start=0, end=100, current_sessions=current, capacity=10
    )

    series = result.pop("series")
    assert [moment for moment, _ in series] == [0, 60]
    assert max(value for _, value in series) == peak
    assert result == {
        "capacity": 10,
        "current_sessions": current,
        "current": current * 10.0,
        "peak_sessions": peak,
        "peak": peak * 10.0,
        "peak_at": peak_at,
        "mean_sessions": mean,
        "mean": round(mean * 10, 2),
    }


def test_sweep_ignores_changes_after_the_window_end():
    result = sweep({10: 1, 150: 1, 160: -2}, start=0, end=100, current_sessions=1, capacity=4)

    assert (result["peak_sessions"], result["mean_sessions"]) == (1, 0.9)


def test_sweep_of_an_empty_window_is_the_level_at_its_start():
    result = sweep({5: 2}, start=5, end=5, current_sessions=2, capacity=4)

    assert (result["peak_sessions"], result["mean_sessions"], result["current"]) == (2, 2.0, 50.0)


@pytest.mark.parametrize(
    ("capacity", "sessions", "percent"),
    [(3, 1, 33.33), (3, 2, 66.67), (1000, 1, 0.1), (7, 7, 100.0), (2, 3, 150.0)],
)
def test_occupancy_percent_is_rounded_to_two_places(capacity, sessions, percent):
    result = sweep({0: sessions}, start=0, end=10, current_sessions=sessions, capacity=capacity)

    assert result["current"] == result["peak"] == result["mean"] == percent


def _open_sessions(tmp_path, count, *, closed=0):
    log = PostfixLog()
    log.sessions("198.51.100.20", count, start=NOW - 300, duration=None)
    log.sessions("198.51.100.21", closed, start=NOW - 600, duration=120)
    return log.write(tmp_path / "mail.log")


GATES = [
    # open sessions at now of capacity 10, force -> triggered, alert, candidates
    pytest.param(0, False, False, False, id="idle"),
    pytest.param(2, False, False, False, id="at-trigger-20"),
    pytest.param(3, False, True, False, id="above-trigger"),
    pytest.param(4, False, True, False, id="at-alert-40"),
    pytest.param(5, False, True, True, id="above-alert"),
    pytest.param(0, True, True, False, id="forced-when-idle"),
    pytest.param(2, True, True, False, id="forced-at-trigger"),
]


@pytest.mark.parametrize(("open_now", "force", "triggered", "alert"), GATES)
def test_trigger_and_alert_are_strictly_above_their_levels(
    tmp_path, open_now, force, triggered, alert
):
    path = _open_sessions(tmp_path, open_now, closed=3)

    result = run_analysis(path, capacity=10, force=force, trigger_occupancy=20, alert_occupancy=40)

    assert result["occupancy"]["current_sessions"] == open_now
    assert result["occupancy"]["current"] == open_now * 10.0
    assert (result["triggered"], result["alert"]) == (triggered, alert)
    # Sources match the rules either way; they become candidates only when triggered.
    assert result["stats"]["matching_sources"] == 1 + (open_now > 0)
    assert len(result["candidates"]) == (result["stats"]["matching_sources"] if triggered else 0)


def test_occupancy_through_the_engine_sweeps_the_sessions_of_the_log(tmp_path):
    log = PostfixLog()
    log.session("192.0.2.1", start=NOW - 3000, duration=2200)  # enters at the window start
    log.session("192.0.2.2", start=NOW - 1200, duration=600)
    log.session("192.0.2.3", start=NOW - 1000, duration=None)
    log.session("192.0.2.4", start=NOW - 900, duration=300)  # the peak: four at once
    log.session("192.0.2.5", start=NOW - 5000, duration=100)  # before the window
    log.write(tmp_path / "mail.log")

    result = run_analysis(tmp_path / "mail.log", capacity=8, window="30m")

    # Per minute of the window, the most sessions at once: four in the minute of the peak.
    series = result["occupancy"].pop("series")
    assert len(series) == 30
    assert series[0] == {"at": iso(NOW - 1800), "sessions": 1, "percent": 12.5}
    assert series[15] == {"at": iso(NOW - 900), "sessions": 4, "percent": 50.0}
    assert series[-1]["sessions"] == 1
    # Session-seconds in the window: 1000 + 600 + 1000 + 300 = 2900 over 1800 s.
    assert result["occupancy"] == {
        "capacity": 8,
        "current_sessions": 1,
        "current": 12.5,
        "peak_sessions": 4,
        "peak": 50.0,
        "peak_at": iso(NOW - 900),
        "mean_sessions": 1.61,
        "mean": 20.14,
    }
    assert result["stats"]["sessions"] == 4


def test_trigger_is_strictly_above_even_below_the_rounding(tmp_path):
    log = PostfixLog()
    log.sessions("198.51.100.20", 20_001, start=NOW - 600, duration=None, spacing=0.01)

    result = run_analysis(log.write(tmp_path / "mail.log"), capacity=100_000, force=False)

    assert result["occupancy"]["current_sessions"] == 20_001
    assert result["triggered"] is True


def test_series_holds_the_highest_level_of_each_minute():
    # 0-300 s: one session 10-70 s, two overlapping in 130-150 s, one open from 250 s
    deltas = _deltas([(10, 70), (130, 200), (140, 150), (250, None)], start=0)
    result = sweep(deltas, start=0, end=300, current_sessions=1, capacity=10)

    assert result["series"] == [[0, 1], [60, 1], [120, 2], [180, 1], [240, 1]]
    assert max(value for _, value in result["series"]) == result["peak_sessions"]


def test_series_of_a_quiet_window_is_zero_throughout():
    result = sweep({}, start=0, end=180, current_sessions=0, capacity=10)

    assert result["series"] == [[0, 0], [60, 0], [120, 0]]


def test_series_of_a_long_window_stays_short_and_keeps_the_peak():
    # a year: steps grow to whole minutes so that at most 720 points come back
    year = 366 * 86400
    deltas = _deltas([(1000.0, 1001.0), (1000.5, 1000.75)], start=0)
    result = sweep(deltas, start=0, end=year, current_sessions=0, capacity=10)

    steps = [moment for moment, _ in result["series"]]
    assert len(steps) <= 720
    assert (steps[1] - steps[0]) % 60 == 0
    assert result["series"][0][1] == 2 == result["peak_sessions"]
