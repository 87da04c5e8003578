"""Session occupancy: concurrent sessions over the gateway's capacity, by a sweep."""

from __future__ import annotations

from typing import Mapping


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
    for moment in sorted(deltas):
        if moment > end:
            break
        area += level * (moment - previous)
        level += deltas[moment]
        previous = moment
        if level > peak:
            peak, peak_at = level, moment
    area += level * (end - previous)
    span = end - start
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
    }


def percent(sessions: float, capacity: int) -> float:
    return round(100.0 * sessions / capacity, 2)
