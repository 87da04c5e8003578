"""The analysis of one check: read the logs, pair sessions, measure occupancy, select sources."""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable

from ansible_collections.campusnet.smtpguard.plugins.module_utils import _checkpoint, _postfix
from ansible_collections.campusnet.smtpguard.plugins.module_utils._addresses import (
    parse_address,
    sort_key,
)
from ansible_collections.campusnet.smtpguard.plugins.module_utils._logfiles import (
    LogFamily,
    LogFileError,
    expand_paths,
    open_log,
    open_log_from,
    tail_lines,
)
from ansible_collections.campusnet.smtpguard.plugins.module_utils._occupancy import sweep
from ansible_collections.campusnet.smtpguard.plugins.module_utils._risk import (
    RiskError,
    rank_to_risk,
    read_risk_file,
)
from ansible_collections.campusnet.smtpguard.plugins.module_utils._rules import (
    Rule,
    load_rules,
    thresholds,
)
from ansible_collections.campusnet.smtpguard.plugins.module_utils._sessions import (
    FIRST_COUNT,
    LONGEST,
    OPEN,
    SESSIONS,
    SessionBook,
)
from ansible_collections.campusnet.smtpguard.plugins.module_utils._timestamps import (
    TimestampParser,
    format_epoch,
    load_zone,
    parse_duration,
    parse_iso,
)

FORMATS = ("auto", "postfix")


class AnalysisError(Exception):
    """What stops an analysis, said so that an operator knows what to do."""


@dataclass
class Settings:
    paths: list[str]
    capacity: int
    format: str = "auto"
    window: float = 1800.0
    now: str | None = None
    year: int | None = None
    timezone: str | None = None
    trigger_occupancy: float = 20.0
    alert_occupancy: float = 40.0
    force: bool = False
    rules: list[dict] | None = None
    risk_source: str = "log"
    risk_file: str | None = None
    unknown_risk: float = 0.0
    postscreen_threshold: int = 1
    dnsbl: dict = field(default_factory=dict)
    report_path: str | None = None
    state_path: str | None = None
    check_mode: bool = False


def analyze(settings: Settings, *, warn: Callable[[str], None] = lambda message: None) -> dict:
    """Run one check and return the result that flood_analyze reports."""
    started = time.monotonic()
    rules = load_rules(settings.rules)
    window = parse_duration(settings.window, name="window")
    if settings.capacity < 1:
        raise AnalysisError(f"capacity must be at least 1 session, not {settings.capacity}")
    zone = load_zone(settings.timezone)
    try:
        families = expand_paths(settings.paths)
    except LogFileError as exc:
        raise AnalysisError(str(exc)) from None
    fmt = _detect_format(families, settings.format)

    given_now = parse_iso(settings.now, zone=zone) if settings.now else None
    now = given_now if given_now is not None else _newest_time(families, settings, zone)
    if now is None:
        raise AnalysisError(
            "no line with a readable timestamp in "
            + ", ".join(repr(log.path) for family in families for log in family.files)
            + "; check format and timezone, or give now"
        )
    window_start = now - window

    book = SessionBook(window_start=window_start, now=now, thresholds=thresholds(rules))
    stats = _postfix.Stats()
    ranks: dict[str, int] = {}
    addresses: dict[bytes, str | None] = {}
    readings, state = _resume(settings, families, fmt, now=now, window_start=window_start,
                              book=book, stats=stats, ranks=ranks, addresses=addresses)  # fmt: skip

    reached: dict[str, tuple[int, float | None]] = {}
    after_now = stats.after_now
    for reading in readings:
        if not reading.pending:
            continue
        log = reading.log
        stamp_of = TimestampParser(
            zone=zone, year=settings.year, now=given_now, reference=log.mtime
        )
        outcome = _read_file(reading, keep_position=state is not None, book=book,
                             stamp_of=stamp_of, stats=stats, ranks=ranks, addresses=addresses,
                             warn=warn)  # fmt: skip
        if outcome is not None:
            reached[log.path] = outcome
        elif state is not None:
            state["unfinished"] = log.path

    if state is not None:
        _keep_state(settings, state, readings, fmt, reached=reached,
                    counted_all=stats.after_now == after_now, book=book, stats=stats,
                    ranks=ranks, addresses=addresses, warn=warn)  # fmt: skip
    book.finish()

    # Logs that begin inside the window say nothing about the time before them.
    covered_start = max(window_start, min(book.data_start or window_start, now))
    occupancy = sweep(
        book.deltas,
        start=covered_start,
        end=now,
        current_sessions=book.counts["open_sessions"],
        capacity=settings.capacity,
    )
    occupancy["peak_at"] = format_epoch(occupancy["peak_at"], zone=zone)
    # Compared on exact counts: the rounded percentage could hide 20.001% as 20.0%.
    current = 100.0 * book.counts["open_sessions"]
    triggered = current > settings.trigger_occupancy * settings.capacity or settings.force
    alert = current > settings.alert_occupancy * settings.capacity

    risks = _risks(settings, book, rules, ranks=ranks, warn=warn)
    matches = _match(book, rules, risks, unknown_risk=settings.unknown_risk)
    candidates = matches if triggered else []

    result = {
        "occupancy": occupancy,
        "triggered": triggered,
        "alert": alert,
        "forced": settings.force,
        "candidates": candidates,
        "rules": [rule.as_dict() for rule in rules],
        "stats": {
            **stats.as_dict(),
            **book.counts,
            "distinct_ips": len(book.sources),
            "matching_sources": len(matches),
            "files": [log.path for family in families for log in family.files],
            "format": fmt,
            "window_start": format_epoch(window_start, zone=zone),
            "window_end": format_epoch(now, zone=zone),
            "window_seconds": window,
            "covered_start": format_epoch(covered_start, zone=zone),
            "seconds": round(time.monotonic() - started, 3),
        },
    }
    if state is not None:
        result["state"] = {key: state[key] for key in ("path", "resumed", "full_read", "written")}
    if stats.skipped:
        warn(f"skipped {stats.skipped} of {stats.lines} log lines that could not be parsed")
    if settings.report_path:
        _write_report(settings.report_path, result, book, risks, rules)
    return result


def _detect_format(families: list[LogFamily], requested: str) -> str:
    if requested not in FORMATS:
        raise AnalysisError(f"format {requested!r} is not supported yet; use one of {FORMATS}")
    if requested != "auto":
        return requested
    for family in families:
        for log in family.files:
            head: list[bytes] = []
            try:
                with open_log(log.path) as handle:
                    for line in handle:
                        head.append(line)
                        if len(head) >= 200:
                            break
            except (OSError, EOFError):
                pass  # a damaged file: judge by the lines before the damage; reading warns
            if _postfix.looks_like(head):
                return "postfix"
    raise AnalysisError(
        "could not recognise the log format of "
        + ", ".join(repr(log.path) for family in families for log in family.files)
        + "; set format explicitly (supported: postfix)"
    )


def _newest_time(families: list[LogFamily], settings: Settings, zone) -> float | None:
    newest: float | None = None
    for family in families:
        for log in reversed(family.files):
            stamp_of = TimestampParser(zone=zone, year=settings.year, reference=log.mtime)
            found = None
            try:
                lines = tail_lines(log.path)
            except (OSError, EOFError):
                continue
            for line in reversed(lines):
                fields = _postfix.split_line(line) if line else None
                if fields and (found := stamp_of(fields[0])) is not None:
                    break
            if found is not None:
                newest = found if newest is None else max(newest, found)
                break
    return newest


def _read_file(reading: _checkpoint.Reading, *, keep_position: bool, warn: Callable[[str], None],
               book: SessionBook, **kwargs) -> tuple[int, float | None] | None:
    """Read one file into `book`: its new offset and first time, or None when it was damaged."""
    path = reading.log.path
    first = reading.mark.first if reading.mark is not None else None
    if first is not None:
        book.begin_stream(first)  # going on in a file whose beginning an earlier run read
    try:
        if not keep_position:
            with open_log(path) as handle:
                first = _postfix.read_postfix(handle, book=book, first=first, **kwargs)
            return 0, first
        handle, position = open_log_from(path, start=reading.start)
        with handle:
            first = _postfix.read_postfix(handle, book=book, first=first, **kwargs)
            return position.offset(), first
    except (OSError, EOFError) as exc:
        # A truncated .gz keeps what was read before the damage.
        warn(f"stopped reading {path!r} early: {exc}; lines before the damage were used")
        return None


def _resume(settings: Settings, families: list[LogFamily], fmt: str, *, now: float,
            window_start: float, **engine) -> tuple[list[_checkpoint.Reading], dict | None]:
    """What to read: every file, or with `state_path` only what the last run did not read
    (the engine then starts where that run left it). Returns the readings and, with
    `state_path`, what becomes of the state."""
    if not settings.state_path:
        return [_checkpoint.Reading(log) for family in families for log in family.files], None
    checkpoint, reason = _checkpoint.load(settings.state_path)
    readings, reason = _checkpoint.plan(
        families, checkpoint, settings=_state_settings(settings, fmt), now=now,
        window_start=window_start,
    ) if checkpoint is not None else (
        [_checkpoint.Reading(log) for family in families for log in family.files], reason
    )  # fmt: skip
    if checkpoint is not None and not reason:
        _checkpoint.restore(checkpoint, **engine)
    state = {"path": settings.state_path, "resumed": not reason, "full_read": reason,
             "written": False}  # fmt: skip
    return readings, state


def _state_settings(settings: Settings, fmt: str) -> dict:
    """The settings that change how lines are read: a state from other ones is not used."""
    return {"format": fmt, "timezone": settings.timezone, "year": settings.year}


def _keep_state(settings: Settings, state: dict, readings: list[_checkpoint.Reading], fmt: str,
                *, reached: dict, counted_all: bool, warn: Callable[[str], None],
                **engine) -> None:
    """Write the state for the next run, unless this is check mode or the run left lines
    behind that the next one would not read again."""
    if settings.check_mode:
        return
    if "unfinished" in state:
        warn(f"state_path kept as it was: {state.pop('unfinished')!r} could not be read to its "
             "end; the next run goes on from the previous state")  # fmt: skip
        return
    if not counted_all:
        warn("state_path kept as it was: some lines lie after now, and a state written now "
             "would skip them for good; the next run goes on from the previous state")  # fmt: skip
        return
    checkpoint = _checkpoint.capture(readings, settings=_state_settings(settings, fmt),
                                     reached=reached, **engine)  # fmt: skip
    try:
        _checkpoint.save(settings.state_path, checkpoint)
    except _checkpoint.CheckpointError as exc:
        raise AnalysisError(str(exc)) from None
    state["written"] = True


def _risks(settings: Settings, book: SessionBook, rules: list[Rule], *, ranks: dict[str, int],
           warn: Callable[[str], None]) -> dict[str, float]:
    source = settings.risk_source
    if source == "none":
        return {}
    if source == "log":
        return {
            address: rank_to_risk(rank, threshold=settings.postscreen_threshold)
            for address, rank in ranks.items()
        }
    if source == "file":
        if not settings.risk_file:
            raise AnalysisError("risk_source is file but risk_file is not set")
        try:
            scores, skipped = read_risk_file(settings.risk_file)
        except RiskError as exc:
            raise AnalysisError(str(exc)) from None
        if skipped:
            warn(f"skipped {skipped} malformed lines in risk_file {settings.risk_file!r}")
        return scores
    if source == "dnsbl":
        return _dnsbl_risks(settings, book, rules, warn=warn)
    raise AnalysisError(f"risk_source {source!r} is not one of log, file, dnsbl, none")


def _dnsbl_risks(settings: Settings, book: SessionBook, rules: list[Rule], *,
                 warn: Callable[[str], None]) -> dict[str, float]:
    """Look up only the sources whose sessions already satisfy a rule that needs a risk."""
    from ansible_collections.campusnet.smtpguard.plugins.module_utils._dns import dnsbl_risk

    zones = settings.dnsbl.get("zones") or []
    if not zones:
        raise AnalysisError("risk_source is dnsbl but dnsbl_zones is empty")
    index = {value: position for position, value in enumerate(thresholds(rules))}
    needed = [
        address
        for address, aggregate in book.sources.items()
        if any(
            rule.min_risk > 0
            and aggregate[FIRST_COUNT + index[rule.min_duration]] >= rule.min_sessions
            for rule in rules
        )
    ]
    if not needed:
        return {}
    found = dnsbl_risk(
        needed,
        zones=zones,
        nameservers=settings.dnsbl.get("nameservers"),
        port=settings.dnsbl.get("port", 53),
        timeout=settings.dnsbl.get("timeout", 2.0),
        concurrency=settings.dnsbl.get("concurrency", 50),
    )
    unknown = [address for address, risk in found.items() if risk is None]
    if unknown:
        warn(f"DNSBL look-ups failed for {len(unknown)} sources; they take unknown_risk")
    return {address: risk for address, risk in found.items() if risk is not None}


def _match(book: SessionBook, rules: list[Rule], risks: dict[str, float], *,
           unknown_risk: float) -> list[dict]:
    index = {value: position for position, value in enumerate(thresholds(rules))}
    matches = []
    for address, aggregate in book.sources.items():
        risk = risks.get(address)
        effective = unknown_risk if risk is None else risk
        matched = [
            rule
            for rule in rules
            if aggregate[FIRST_COUNT + index[rule.min_duration]] >= rule.min_sessions
            and effective >= rule.min_risk
        ]
        if not matched:
            continue
        first = matched[0]
        matches.append({
            "ip": address,
            "rule": first.name,
            "rules": [rule.name for rule in matched],
            "sessions": aggregate[SESSIONS],
            "qualifying_sessions": aggregate[FIRST_COUNT + index[first.min_duration]],
            "min_duration": _seconds(first.min_duration),
            "longest_session": _seconds(aggregate[LONGEST]),
            "open_sessions": aggregate[OPEN],
            "risk": effective,
            "risk_known": risk is not None,
        })
    matches.sort(key=lambda match: (-match["qualifying_sessions"], -match["sessions"],
                                    sort_key(parse_address(match["ip"]))))
    return matches


def _seconds(value: float) -> float | int:
    return int(value) if value == int(value) else round(value, 3)


def _write_report(path: str, result: dict, book: SessionBook, risks: dict[str, float],
                  rules: list[Rule]) -> None:
    index = {value: position for position, value in enumerate(thresholds(rules))}
    sources = [
        {
            "ip": address,
            "sessions": aggregate[SESSIONS],
            "open_sessions": aggregate[OPEN],
            "longest_session": _seconds(aggregate[LONGEST]),
            "risk": risks.get(address),
            "qualifying": {
                rule.name: aggregate[FIRST_COUNT + index[rule.min_duration]] for rule in rules
            },
        }
        for address, aggregate in book.sources.items()
    ]
    sources.sort(key=lambda source: (-source["sessions"], sort_key(parse_address(source["ip"]))))
    report = {**result, "sources": sources}
    directory = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(directory, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(dir=directory, prefix=".report-")
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            json.dump(report, handle, indent=1, sort_keys=True)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except OSError as exc:
        raise AnalysisError(f"cannot write report_path {path!r}: {exc.strerror}") from None
