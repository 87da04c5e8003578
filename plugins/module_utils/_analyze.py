"""The analysis of one check: read the logs, pair sessions, measure occupancy, select sources."""

from __future__ import annotations

import functools
import json
import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable

from ansible_collections.campusnet.smtpguard.plugins.module_utils import _checkpoint, _formats
from ansible_collections.campusnet.smtpguard.plugins.module_utils._addresses import (
    parse_address,
    sort_key,
)
from ansible_collections.campusnet.smtpguard.plugins.module_utils._engine import Engine
from ansible_collections.campusnet.smtpguard.plugins.module_utils._logfiles import (
    LogFamily,
    LogFileError,
    drop_copies,
    expand_paths,
    open_log,
    open_log_from,
    tail_lines,
    without_bom,
)
from ansible_collections.campusnet.smtpguard.plugins.module_utils._measures import (
    MeasureError,
    label_sources,
    load_kinds,
    load_servers,
    server_occupancy,
)
from ansible_collections.campusnet.smtpguard.plugins.module_utils._occupancy import (
    series_points,
    sweep,
)
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
    host_of,
)
from ansible_collections.campusnet.smtpguard.plugins.module_utils._timestamps import (
    FUTURE_SLACK,
    TimestampParser,
    format_epoch,
    load_zone,
    parse_duration,
    parse_iso,
)

FORMATS = _formats.FORMATS

# Longest window an analysis takes: a year of logs is already a replay, not a check.
MAX_WINDOW = 366 * 86400
# The times a check can have: year inference looks some years around them.
EARLIEST, LATEST = 31536000.0, 253370764800.0  # 1971-01-01, 9999-01-01
# Logs that end this long before the check are stale, and the result says so.
STALE_AFTER = 600.0


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
    # What a format needs besides the lines (the jsonl field mapping, say).
    format_options: dict = field(default_factory=dict)
    # Internal mail servers whose occupancy is reported, and their share of the capacity.
    servers: list = field(default_factory=list)
    server_share: float = 25.0
    # Thresholds of the attack-kind labels.
    attack_kinds: dict = field(default_factory=dict)


def analyze(settings: Settings, *, warn: Callable[[str], None] = lambda message: None) -> dict:
    """Run one check and return the result that flood_analyze reports."""
    started = time.monotonic()
    rules = load_rules(settings.rules)
    window = parse_duration(settings.window, name="window")
    _check_settings(settings, window=window, warn=warn)
    try:
        kinds = load_kinds(settings.attack_kinds)
        servers = load_servers(settings.servers)
    except MeasureError as exc:
        raise AnalysisError(str(exc)) from None
    if not (math.isfinite(settings.server_share) and 0 < settings.server_share <= 100):
        raise AnalysisError(
            "server_share must be more than 0 and at most 100 percent, "
            f"not {settings.server_share!r}"
        )
    zone = load_zone(settings.timezone)
    try:
        families = expand_paths(settings.paths)
    except LogFileError as exc:
        raise AnalysisError(str(exc)) from None
    families, copies = drop_copies(families)
    for copy, original, equal in copies:
        what = "" if equal else "the start of "
        warn(f"{copy!r} has the same content as {what}{original!r} (compared uncompressed, as "
             f"a whole): its lines were read once, in {original!r}; leave the copy out of "
             "paths")  # fmt: skip
    # Each rotated family is read in its own format: a list may name several gateways' logs.
    formats = _detect_formats(families, settings.format)
    fmt = ", ".join(sorted(set(formats.values())))

    given_now = parse_iso(settings.now, zone=zone) if settings.now else None
    if given_now is not None and not EARLIEST <= given_now <= LATEST:
        raise AnalysisError(f"now must lie between 1971 and 9998, not {settings.now!r}")
    log_end = _newest_time(families, settings, zone, formats)
    now = given_now if given_now is not None else log_end
    if now is None and all(log.size == 0 for family in families for log in family.files):
        raise AnalysisError(
            "the log files are empty: "
            + ", ".join(repr(log.path) for family in families for log in family.files)
            + "; check that the gateway is logging (right after a rotation, include the "
            "rotated file, for example mail.log*)"
        )
    if now is None:
        raise AnalysisError(
            "no line with a readable timestamp in "
            + ", ".join(repr(log.path) for family in families for log in family.files)
            + "; check format and timezone, or give now"
        )
    window_start = now - window

    # The rules' session lengths, and last the one a slow post takes (its label counts them).
    counted = (*thresholds(rules), kinds["slow_seconds"])
    slow_index = FIRST_COUNT + len(counted) - 1
    book = SessionBook(window_start=window_start, now=now, thresholds=counted)
    engine = Engine(book, options=settings.format_options)
    engine.track_servers = bool(servers)
    stats = engine.stats
    readings, state = _resume(settings, families, fmt, now=now, window_start=window_start,
                              engine=engine)  # fmt: skip

    reached: dict[str, tuple[int, float | None]] = {}
    unmatched: list[dict] = []
    after_now = stats.after_now
    for reading in readings:
        if not reading.pending:
            continue
        open_before = set(book.open_sessions)
        log = reading.log
        engine.origin = log.origin
        stamp_of = TimestampParser(
            zone=zone, year=settings.year, now=given_now, reference=log.mtime
        )
        parsed_before, lines_before = stats.parsed, stats.lines
        outcome = _read_file(reading, formats[log.path], keep_position=state is not None,
                             engine=engine, stamp_of=stamp_of, warn=warn)  # fmt: skip
        for reason, count in engine.skip_reasons.items():
            warn(f"skipped {count} lines of {log.path!r}: {reason}")
        engine.skip_reasons.clear()
        if stats.lines > lines_before and stats.parsed == parsed_before:
            unmatched.append(_unmatched(log.path, formats[log.path], stats.lines - lines_before,
                                        requested=settings.format, warn=warn))  # fmt: skip
        if outcome is not None:
            reached[log.path] = outcome
            continue
        # The file broke off: its open sessions cannot be paired with any later line.
        hosts = {host_of(key) for key in set(book.open_sessions) - open_before}
        if hosts:
            ended = book.abandon(hosts)
            warn(f"{ended} sessions open where {log.path!r} broke off were ended at their last "
                 "line; durations around the damage are lower bounds")  # fmt: skip
        if state is not None:
            state["unfinished"] = log.path

    _check_format(settings.format, unmatched, families)
    if state is not None:
        _keep_state(settings, state, readings, fmt, reached=reached,
                    counted_all=stats.after_now == after_now, engine=engine,
                    warn=warn)  # fmt: skip
    _check_coverage(stats, families, state, fmt, now=now, log_end=log_end,
                    window_start=window_start, given_now=given_now, zone=zone, engine=engine,
                    warn=warn)  # fmt: skip
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
    occupancy["series"] = series_points(occupancy["series"], settings.capacity,
                                        lambda moment: format_epoch(moment, zone=zone))  # fmt: skip
    # Compared on exact counts: the rounded percentage could hide 20.001% as 20.0%.
    current = 100.0 * book.counts["open_sessions"]
    triggered = current > settings.trigger_occupancy * settings.capacity or settings.force
    alert = current > settings.alert_occupancy * settings.capacity

    risks = _risks(settings, book, rules, engine=engine, warn=warn)
    matches = _match(book, rules, risks, unknown_risk=settings.unknown_risk)
    attack = label_sources(matches, book, kinds=kinds, slow_index=slow_index,
                           replies=engine.replies,
                           server_replies=engine.server_replies,
                           notes=engine.notes)  # fmt: skip
    server_results = server_occupancy(
        engine.servers, servers, start=covered_start, end=now, capacity=settings.capacity,
        share=settings.server_share, replies=engine.server_replies,
        format_time=lambda moment: format_epoch(moment, zone=zone),
    )  # fmt: skip
    unseen = [server["name"] for server in server_results
              if not server["sessions"] and not server["tempfails"]]  # fmt: skip
    if unseen:
        warn(f"no session to {', '.join(unseen)} in the window: check the servers' addresses, "
             "and that the gateway's deliveries are in the logs read")  # fmt: skip
    candidates = matches if triggered else []

    result = {
        "occupancy": occupancy,
        "triggered": triggered,
        "alert": alert,
        "forced": settings.force,
        "candidates": candidates,
        "rules": [rule.as_dict() for rule in rules],
        "attack": attack,
        "servers": server_results,
        "stats": {
            **stats.as_dict(),
            **book.counts,
            "distinct_ips": len(book.sources),
            "matching_sources": len(matches),
            "files": [log.path for family in families for log in family.files],
            "format": fmt,
            "unmatched_files": unmatched,
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
    if stats.bad_fields:
        warn(f"left out {stats.bad_fields} values out of range or unreadable (a risk outside "
             "0 to 100, a session length no session has); their lines were read without them")
    if settings.report_path:
        _write_report(settings.report_path, result, book, risks, rules)
    return result


def _check_settings(settings: Settings, *, window: float, warn: Callable[[str], None]) -> None:
    """Refuse option values that would make the analysis meaningless, before reading."""
    if not settings.paths:
        raise AnalysisError("paths is empty; give the gateway's log files or glob patterns")
    if settings.capacity < 1:
        raise AnalysisError(f"capacity must be at least 1 session, not {settings.capacity}")
    if not 0 < window <= MAX_WINDOW:
        raise AnalysisError(
            f"window must be more than 0 s and at most {MAX_WINDOW // 86400} days, "
            f"not {settings.window!r}"
        )
    for name in ("trigger_occupancy", "alert_occupancy"):
        value = getattr(settings, name)
        if not math.isfinite(value) or value < 0:
            raise AnalysisError(f"{name} must be a percentage of 0 or more, not {value!r}")
    if settings.alert_occupancy < settings.trigger_occupancy:
        warn(
            f"alert_occupancy ({settings.alert_occupancy}%) is below trigger_occupancy "
            f"({settings.trigger_occupancy}%): alerts will come before any block"
        )
    if not (math.isfinite(settings.unknown_risk) and 0 <= settings.unknown_risk <= 100):
        raise AnalysisError(
            f"unknown_risk must be from 0 to 100 percent, not {settings.unknown_risk!r}"
        )
    if settings.postscreen_threshold < 1:
        raise AnalysisError(
            f"postscreen_threshold must be at least 1 (the rank the site counts as spam), "
            f"not {settings.postscreen_threshold}"
        )
    if settings.year is not None and not 1971 <= settings.year <= 9998:
        raise AnalysisError(f"year must be a year such as 2026, not {settings.year}")
    if settings.risk_source == "dnsbl":
        _check_dnsbl(settings.dnsbl)
    if settings.format_options:
        from ansible_collections.campusnet.smtpguard.plugins.module_utils._jsonl import validate

        try:
            validate(settings.format_options)
        except ValueError as exc:
            raise AnalysisError(str(exc)) from None


def _check_dnsbl(options: dict) -> None:
    from ansible_collections.campusnet.smtpguard.plugins.module_utils._dns import (
        parse_dnsbl_zones,
    )

    try:
        parse_dnsbl_zones(options.get("zones") or [])
    except ValueError as exc:
        raise AnalysisError(f"dnsbl_zones: {exc}") from None
    for server in options.get("nameservers") or []:
        if parse_address(str(server)) is None:
            raise AnalysisError(f"dnsbl_nameservers: {server!r} is not an IP address")
    port = options.get("port", 53)
    if not 1 <= int(port) <= 65535:
        raise AnalysisError(f"dnsbl_port must be from 1 to 65535, not {port}")
    timeout = float(options.get("timeout", 2.0))
    if not (math.isfinite(timeout) and timeout > 0):
        raise AnalysisError(f"dnsbl_timeout must be more than 0 seconds, not {timeout}")


def _check_coverage(stats, families: list[LogFamily], state: dict | None, fmt: str, *, now: float,
                    log_end: float | None, window_start: float, given_now: float | None,
                    zone, engine: Engine, warn: Callable[[str], None]) -> None:  # fmt: skip
    """Say when the logs cannot support the answer: empty or unreadable, or ending long
    before `now`; and never let a session run on past the newest log line."""
    names = ", ".join(repr(log.path) for family in families for log in family.files)
    resumed = state is not None and state.get("resumed")
    if not resumed and stats.lines == 0:
        warn(
            f"the log files are empty: {names}; check that the gateway is logging (right after "
            "a rotation, include the rotated file, for example mail.log*)"
        )
    if stats.lines and not (stats.parsed or stats.ignored or stats.after_now):
        raise AnalysisError(
            f"none of the {stats.lines} lines of {names} could be read as a {fmt} log; "
            "check the paths and the format"
        )
    if given_now is not None and stats.lines and stats.after_now == stats.lines - stats.skipped:
        warn(f"every log line lies after now ({format_epoch(now, zone=zone)}): nothing was "
             "analysed; check now")  # fmt: skip

    if log_end is not None and now - log_end > STALE_AFTER:
        # Logs that stopped long before now cannot show that a session still runs: it counts
        # up to the newest line. Within STALE_AFTER it counts with its age at now.
        engine.book.open_until = log_end
        engine.servers.open_until = log_end
        warn(
            f"the newest log line ({format_epoch(log_end, zone=zone)}) is "
            f"{_span(now - log_end)} before now ({format_epoch(now, zone=zone)}): sessions "
            "still open there count only up to that line; check that the gateway is logging "
            "and its logs are fetched"
        )
    if given_now is None and log_end is not None:
        age = time.time() - log_end
        if age > max(STALE_AFTER, 2 * (now - window_start)):
            warn(
                f"the newest log line is {_span(age)} old ({format_epoch(log_end, zone=zone)}); "
                "if this is not a replay, logging or fetching has stalled"
            )


def _unmatched(path: str, fmt: str, lines: int, *, requested: str,
               warn: Callable[[str], None]) -> dict:  # fmt: skip
    """A file read in format `fmt` of which no line was a session event: what it looks like,
    said in a warning and kept for the result."""
    head = _head(path)
    looks = _formats.detect(head)
    other = looks if looks not in (None, fmt) and not _formats.load(fmt).looks_like(head) else None
    said = f"none of the {lines} lines read from {path!r} is an SMTP session event of a {fmt} log"
    if other is not None and requested == "auto":
        warn(f"{said}, and the file looks like a {other} log although its rotated family was "
             f"recognised as {fmt}: give the logs of each format their own file names")  # fmt: skip
    elif other is not None:
        warn(f"{said}, and the file looks like a {other} log: set format to {other}, or to auto")
    else:
        warn(f"{said}; unless the gateway was idle, check the format")
    return {"path": path, "format": fmt, "lines": lines, "looks_like": other}


def _check_format(requested: str, unmatched: list[dict], families: list[LogFamily]) -> None:
    """Fail when a format given explicitly fits none of the files read, each of which looks
    like another format: an analysis of nothing would look like an all-clear."""
    if requested == "auto" or not unmatched or any(not file["looks_like"] for file in unmatched):
        return
    unread = {file["path"] for file in unmatched}
    if any(log.path not in unread and log.size for family in families for log in family.files):
        return  # another file was read in that format
    looks = sorted({file["looks_like"] for file in unmatched})
    raise AnalysisError(
        f"none of the {sum(file['lines'] for file in unmatched)} lines of "
        + ", ".join(repr(file["path"]) for file in unmatched)
        + f" is an SMTP session event of a {requested} log, and they look like a "
        + " or ".join(looks)
        + f" log: set format to {looks[0] if len(looks) == 1 else 'auto'}"
        + (", or to auto" if len(looks) == 1 else "")
    )


def _span(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


def _detect_formats(families: list[LogFamily], requested: str) -> dict[str, str]:
    """The format of each file (by path): `requested`, or with `auto` what the first lines of
    each rotated family show (a family whose files are all empty takes another's)."""
    supported = ("auto", *_formats.available())
    if requested not in supported:
        raise AnalysisError(f"format {requested!r} is not supported; use one of {supported}")
    if requested != "auto":
        return {log.path: requested for family in families for log in family.files}
    found: dict[int, str] = {}
    unknown: list[LogFamily] = []
    for position, family in enumerate(families):
        heads = []
        for log in family.files:
            head = _head(log.path)
            detected = _formats.detect(head)
            if detected is not None:
                found[position] = detected
                break
            heads.append(head)
        else:
            if any(heads):
                unknown.append(family)
    if unknown:
        raise AnalysisError(
            "could not recognise the log format of "
            + ", ".join(repr(log.path) for family in unknown for log in family.files)
            + f"; set format explicitly (supported: {', '.join(supported[1:])})"
        )
    # Families with nothing to misread take the format of the others (postfix when all are
    # empty); the analysis warns that they are empty.
    fallback = next(iter(found.values()), "postfix")
    return {
        log.path: found.get(position, fallback)
        for position, family in enumerate(families)
        for log in family.files
    }


def _head(path: str) -> list[bytes]:
    head: list[bytes] = []
    try:
        with open_log(path) as handle:
            for line in without_bom(handle):
                head.append(line)
                if len(head) >= 200:
                    break
    except (OSError, EOFError):
        pass  # a damaged file: judge by the lines before the damage; reading warns
    return head


def _newest_time(families: list[LogFamily], settings: Settings, zone,
                 formats: dict[str, str]) -> float | None:  # fmt: skip
    """The newest timestamp among the last lines of each family's newest readable file.

    The newest of several lines, not the last one, so that one line with a skewed clock
    cannot move the check a year back; a time more than a day after the controller's clock
    is a skewed clock too, and does not count.
    """
    newest: float | None = None
    for family in families:
        for log in reversed(family.files):
            fmt = formats[log.path]
            line_time = _formats.load(fmt).line_time
            if fmt == "jsonl":  # which field holds the time is the site's to say
                line_time = functools.partial(line_time, options=settings.format_options)
            limit = log.mtime + FUTURE_SLACK  # no line is written after its file's mtime
            stamp_of = TimestampParser(zone=zone, year=settings.year, reference=log.mtime)
            try:
                lines = tail_lines(log.path)
            except (OSError, EOFError):
                continue
            found = [
                moment
                for line in lines[-256:]
                if line and (moment := line_time(line, stamp_of)) is not None and moment <= limit
            ]
            if found:
                newest = max(found) if newest is None else max(newest, *found)
                break
    return newest


def _read_file(reading: _checkpoint.Reading, fmt: str, *, keep_position: bool, engine: Engine,
               stamp_of: Callable, warn: Callable[[str], None]) -> tuple[int, float | None] | None:
    """Read one file into `engine`: its new offset and first time, or None when it was
    damaged."""
    path = reading.log.path
    first = reading.mark.first if reading.mark is not None else None
    if first is not None:
        engine.book.begin_stream(first)  # going on in a file whose beginning an earlier run read
    read = _formats.load(fmt).read
    engine.book.keys_recur = True  # pids come back; readers of unique session ids say so
    try:
        if not keep_position:
            with open_log(path) as handle:
                first = read(without_bom(handle), engine=engine, stamp_of=stamp_of, first=first)
            return 0, first
        handle, position = open_log_from(path, start=reading.start)
        with handle:
            lines = without_bom(handle) if reading.start == 0 else handle
            first = read(lines, engine=engine, stamp_of=stamp_of, first=first)
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
    """The settings that change how lines are read: a state from other ones is not used.
    `servers` says whether deliveries are read (Postfix reads them only for servers)."""
    return {"format": fmt, "timezone": settings.timezone, "year": settings.year,
            "format_options": settings.format_options, "servers": bool(settings.servers)}


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


def _risks(settings: Settings, book: SessionBook, rules: list[Rule], *, engine: Engine,
           warn: Callable[[str], None]) -> dict[str, float]:
    source = settings.risk_source
    if source == "none":
        return {}
    if source == "log":
        # What the format gives: postscreen ranks, or a risk the log states (ESA SBRS, JSON).
        risks = dict(engine.risks)
        for address, rank in engine.ranks.items():
            risk = rank_to_risk(rank, threshold=settings.postscreen_threshold)
            if risk > risks.get(address, -1.0):
                risks[address] = risk
        return risks
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
