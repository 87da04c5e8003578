"""Session occupancy: concurrent sessions over the gateway's capacity, by a sweep."""

from __future__ import annotations

import math
from typing import Mapping

# The occupancy over the window, for a chart: the highest level in each step of at least a
# minute, with at most this many steps.
SERIES_POINTS = 720


def sweep(
    deltas: Mapping[float, int], *, start: float, end: float, current_sessions: int, capacity: int
) -> dict:
    """Peak and time-weighted mean of concurrent sessions over [start, end].

    `deltas` maps a time to the change in concurrent sessions there (+1 where a session
    begins or enters the window, -1 where it ends); changes at one time apply together.
    """
    level = 0
    peak = 0
    peak_at = start
    area = 0.0
    previous = start
    span = end - start
    step = max(60.0, math.ceil(span / SERIES_POINTS / 60.0) * 60.0)
    steps = max(1, math.ceil(span / step))
    highest = [None] * steps  # per step, the highest level reached in it
    for moment in sorted(deltas):
        if moment > end:
            break
        area += level * (moment - previous)
        _raise(highest, level, previous, moment, start=start, step=step)
        level += deltas[moment]
        previous = moment
        if level > peak:
            peak, peak_at = level, moment
    area += level * (end - previous)
    _raise(highest, level, previous, end, start=start, step=step)
    mean_sessions = area / span if span > 0 else float(level)

    return {
        "capacity": capacity,
        "current_sessions": current_sessions,
        "current": percent(current_sessions, capacity),
        "peak_sessions": peak,
        "peak": percent(peak, capacity),
        "peak_at": peak_at,
        "mean_sessions": round(mean_sessions, 2),
        "mean": percent(mean_sessions, capacity),
        # [step start, highest sessions in the step]
        "series": [
            [start + index * step, value]
            for index, value in enumerate(highest)
            if value is not None
        ],
    }


def _raise(highest: list, level: int, begin: float, until: float, *, start: float,
           step: float) -> None:  # fmt: skip
    """Note that `level` held from `begin` to `until` in the steps it covers."""
    if until < start:
        return
    first = max(0, int((max(begin, start) - start) // step))
    last = min(len(highest) - 1, int((until - start) // step))
    for index in range(first, last + 1):
        if highest[index] is None or level > highest[index]:
            highest[index] = level


def series_points(series: list, capacity: int, format_time) -> list[dict]:
    """The sweep's series as {at, sessions, percent}, with times as `format_time` writes them."""
    return [
        {"at": format_time(moment), "sessions": sessions, "percent": percent(sessions, capacity)}
        for moment, sessions in series
    ]


def percent(sessions: float, capacity: int) -> float:
    return round(100.0 * sessions / capacity, 2)
