"""What the analysis measures beyond counts per source: the occupancy of each internal mail
server, temporary failures, and the attack kinds of the source paper.

The paper saw five kinds of attack. Each candidate, and the run as a whole, is labelled with
the kinds it shows, with the numbers behind each label:
- `few_source_flood` (the paper's "SMTP DoS"): a source with at least `flood_sessions`
  sessions in the window (default: the session count of the paper's cond3);
- `slow_post`: a source with a session of at least `slow_seconds`;
- `421_storm` (the paper's "DoS on non-mail servers"): a source that drew at least
  `storm_replies` 421s, from the gateway or from the internal servers its mail went to; for
  the run, also internal servers that answered the gateway with that many 421s;
- `many_source_flood` (the paper's "SMTP DDoS"): at least `ddos_sources` sources with
  `ddos_sessions` sessions each (default: the count of the paper's cond1); those among them
  that are not a few-source flood by themselves carry the label;
- `mixed`: two kinds or more.
"""

from __future__ import annotations

import math
from typing import Callable

from ansible_collections.campusnet.smtpguard.plugins.module_utils._addresses import (
    normalise_address,
)
from ansible_collections.campusnet.smtpguard.plugins.module_utils._occupancy import (
    series_points,
    sweep,
)
from ansible_collections.campusnet.smtpguard.plugins.module_utils._sessions import (
    LONGEST,
    SESSIONS,
    SessionBook,
)

FEW_SOURCE, SLOW_POST, STORM, MANY_SOURCE, MIXED = (
    "few_source_flood",
    "slow_post",
    "421_storm",
    "many_source_flood",
    "mixed",
)
KIND_DEFAULTS = {
    "flood_sessions": 300,  # the session count of the paper's cond3
    "slow_seconds": 200,  # the session length of the paper's cond2
    "storm_replies": 20,
    "ddos_sources": 10,
    "ddos_sessions": 40,  # the session count of the paper's cond1
}


class MeasureError(ValueError):
    """An option of the measurements that cannot be used, naming it."""


def load_kinds(options: dict | None) -> dict[str, float]:
    """The thresholds of the attack-kind labels: the defaults, overridden by `options`."""
    settings = dict(KIND_DEFAULTS)
    for name, value in (options or {}).items():
        if name not in KIND_DEFAULTS:
            raise MeasureError(
                f"attack_kinds: unknown threshold {name!r}; use {', '.join(KIND_DEFAULTS)}"
            )
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise MeasureError(f"attack_kinds.{name} must be a number, not {value!r}")
        try:
            number = float(value)
        except (ValueError, OverflowError):
            raise MeasureError(f"attack_kinds.{name} must be a number, not {value!r}") from None
        if not math.isfinite(number) or number < 1:
            raise MeasureError(f"attack_kinds.{name} must be 1 or more, not {value!r}")
        settings[name] = number
    return settings


def load_servers(items: list | None) -> list[tuple[str, str]]:
    """(name, address) of each internal server: an address, or {name, address}."""
    servers: list[tuple[str, str]] = []
    seen: set[str] = set()
    names: set[str] = set()
    for position, item in enumerate(items or [], start=1):
        if isinstance(item, dict):
            raw, name = item.get("address"), item.get("name")
        else:
            raw, name = item, None
        address = normalise_address(str(raw)) if isinstance(raw, (str, int)) else None
        if address is None:
            raise MeasureError(
                f"servers[{position}]: {raw!r} is not an IP address; give each internal mail "
                "server as an address or as {name, address}"
            )
        if address in seen:
            raise MeasureError(f"servers[{position}]: {address} is listed twice")
        label = str(name) if name else address
        if label in names:
            raise MeasureError(f"servers[{position}]: the name {label!r} is used twice")
        seen.add(address)
        names.add(label)
        servers.append((label, address))
    return servers


def server_occupancy(
    book: SessionBook,
    servers: list[tuple[str, str]],
    *,
    start: float,
    end: float,
    capacity: int,
    share: float,
    replies: dict[str, dict[str, int]],
    format_time: Callable[[float], str],
) -> list[dict]:
    """The occupancy of each server in `servers` against `share` percent of `capacity`:
    the gateway's concurrent sessions to it over [start, end]. `book` has not been finished;
    it stays as it was."""
    server_capacity = max(1, math.floor(capacity * share / 100.0))
    wanted = {address for _, address in servers}
    deltas: dict[str, dict[float, int]] = {address: {} for address in wanted}
    current = dict.fromkeys(wanted, 0)
    sessions = dict.fromkeys(wanted, 0)
    window_start = book.window_start
    until = min(book.now, book.open_until)

    def add(first: float, last: float | None, address: str) -> None:
        changes = deltas[address]
        begin = max(first, window_start)
        changes[begin] = changes.get(begin, 0) + 1
        if last is not None:
            changes[max(last, begin)] = changes.get(max(last, begin), 0) - 1
        sessions[address] += 1

    for first, last, address in book.ended:
        if address in wanted and last >= window_start:
            add(first, last, address)
    for first, address, _last, _tentative in book.open_sessions.values():
        if address in wanted and first <= until:
            add(first, None, address)
            current[address] += 1

    results = []
    for name, address in servers:
        occupancy = sweep(deltas[address], start=start, end=end, current_sessions=current[address],
                          capacity=server_capacity)  # fmt: skip
        occupancy["peak_at"] = format_time(occupancy["peak_at"])
        occupancy["series"] = series_points(occupancy["series"], server_capacity, format_time)
        answered = replies.get(address, {})
        results.append({
            "name": name,
            "address": address,
            "share": share,
            "sessions": sessions[address],
            **occupancy,
            "over_share": occupancy["current_sessions"] > server_capacity,
            "tempfails": answered.get("4xx", 0),
            "replies_421": answered.get("421", 0),
        })
    return results


def label_sources(
    candidates: list[dict],
    book: SessionBook,
    *,
    kinds: dict[str, float],
    slow_index: int,
    replies: dict[str, dict[str, int]],
    server_replies: dict[str, dict[str, int]],
    notes: dict[str, dict[str, int]],
) -> dict:
    """Label each candidate (in place) with its kinds and the numbers behind them; return the
    run's labels. `slow_index` is where the book counts sessions of `slow_seconds` or more."""
    drawn = {address: counts.get("421", 0) for address, counts in replies.items()}
    for address, noted in notes.items():
        if noted.get("server_421"):
            drawn[address] = drawn.get(address, 0) + noted["server_421"]
    flood = kinds["flood_sessions"]
    storm = kinds["storm_replies"]
    ddos_floor = kinds["ddos_sessions"]

    flooding = [address for address, aggregate in book.sources.items()
                if aggregate[SESSIONS] >= ddos_floor]  # fmt: skip
    many = len(flooding) >= kinds["ddos_sources"]
    flooding_set = set(flooding) if many else set()

    run_counts = {FEW_SOURCE: 0, SLOW_POST: 0, STORM: 0}
    for address, aggregate in book.sources.items():
        shown = _kinds_of(address, aggregate, flood=flood, storm=storm, slow_index=slow_index,
                          drawn=drawn, flooding=flooding_set)  # fmt: skip
        for kind in shown:
            if kind in run_counts:
                run_counts[kind] += 1

    for candidate in candidates:
        address = candidate["ip"]
        aggregate = book.sources.get(address)
        if aggregate is None:
            candidate["kinds"], candidate["kind_numbers"] = [], {}
            continue
        shown = _kinds_of(address, aggregate, flood=flood, storm=storm, slow_index=slow_index,
                          drawn=drawn, flooding=flooding_set)  # fmt: skip
        answered = replies.get(address, {})
        candidate["tempfails"] = answered.get("4xx", 0)
        candidate["replies_421"] = answered.get("421", 0)
        candidate["kinds"] = shown + ([MIXED] if len(shown) > 1 else [])
        candidate["kind_numbers"] = {
            "sessions": aggregate[SESSIONS],
            "longest_session": round(aggregate[LONGEST], 3),
            "slow_sessions": aggregate[slow_index],
            "replies_421": answered.get("421", 0),
            "server_421": notes.get(address, {}).get("server_421", 0),
        }
        candidate["notes"] = dict(notes.get(address, {}))

    server_421 = sum(counts.get("421", 0) for counts in server_replies.values())
    run_kinds = [kind for kind in (FEW_SOURCE, SLOW_POST) if run_counts[kind]]
    if run_counts[STORM] or server_421 >= storm:
        run_kinds.append(STORM)
    if many:
        run_kinds.append(MANY_SOURCE)
    if len(run_kinds) > 1:
        run_kinds.append(MIXED)
    return {
        "kinds": run_kinds,
        "numbers": {
            "few_source_flood_sources": run_counts[FEW_SOURCE],
            "slow_post_sources": run_counts[SLOW_POST],
            "421_storm_sources": run_counts[STORM],
            "server_replies_421": server_421,
            "flooding_sources": len(flooding),
            "replies_421": sum(counts.get("421", 0) for counts in replies.values()),
            "tempfails": sum(counts.get("4xx", 0) for counts in replies.values()),
        },
        "thresholds": {name: _number(value) for name, value in kinds.items()},
    }


def _kinds_of(address: str, aggregate: list, *, flood: float, storm: float, slow_index: int,
              drawn: dict[str, int], flooding: set[str]) -> list[str]:  # fmt: skip
    shown = []
    if aggregate[SESSIONS] >= flood:
        shown.append(FEW_SOURCE)
    if aggregate[slow_index] > 0:
        shown.append(SLOW_POST)
    if drawn.get(address, 0) >= storm:
        shown.append(STORM)
    if address in flooding and aggregate[SESSIONS] < flood:
        shown.append(MANY_SOURCE)
    return shown


def _number(value: float) -> float | int:
    return int(value) if value == int(value) else value
