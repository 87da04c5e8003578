"""Evidence reports: one JSON and one self-contained HTML page per cycle, kept for a while,
and period summaries built from them (checks above the alert level, sources blocked).

Every string in a page is escaped: PTR names, reasons and device messages come from logs,
DNS and devices, which an attacker can shape. Charts are inline SVG; a page needs nothing
but itself.
"""

from __future__ import annotations

import datetime as dt
import difflib
import json
import math
import os
import re
import secrets
import tempfile
from dataclasses import dataclass
from html import escape
from typing import Any, Iterable, Mapping, Sequence
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from jinja2 import Environment
from markupsafe import Markup

from ansible_collections.campusnet.smtpguard.plugins.module_utils._notify import server_rows

REPORT_VERSION = 1
REPORT_NAME = re.compile(r"^cycle-(\d{8}T\d{6}Z)-[0-9a-f]{6}\.(json|html)$")
PERIODS = ("day", "month")
COLOURS = ("#1565c0", "#6a1b9a", "#00838f", "#ef6c00", "#2e7d32", "#ad1457", "#4e342e")


class ReportError(Exception):
    """What stops a report, worded to say what to do."""


# The report of one cycle


def build_report(
    *,
    gateways: Mapping[str, Mapping[str, Any]],
    spare: Mapping[str, Any] | None,
    plan: Mapping[str, Any] | None,
    devices: Mapping[str, Mapping[str, Any]] | None,
    trigger_occupancy: float,
    alert_occupancy: float,
    written_at: dt.datetime,
    levels: Mapping[str, Mapping[str, float]] | None = None,
    run_kind: str = "scheduled",
    snapshot: int | None = None,
    failures: Sequence[str] = (),
) -> dict[str, Any]:
    """The evidence of one cycle as plain data (what the JSON file holds).

    `levels` holds each gateway's own trigger and alert levels; the two levels given are
    those of a gateway it does not name.
    """
    spare = spare or {}
    plan = plan or {}
    default = {"trigger": trigger_occupancy, "alert": alert_occupancy}
    rows = [
        _gateway(name, result, levels={**default, **((levels or {}).get(name) or {})})
        for name, result in gateways.items()
    ]
    decision = _decision(rows, plan, snapshot=snapshot)
    return {
        "version": REPORT_VERSION,
        "run": {
            "kind": run_kind,
            "check_time": max((row["window_end"] for row in rows), default=None),
            "written_at": written_at.astimezone(dt.UTC).isoformat(timespec="seconds"),
        },
        "levels": {"trigger": trigger_occupancy, "alert": alert_occupancy},
        "gateways": rows,
        "decision": decision,
        "candidates": _candidates(spare, plan),
        "devices": [_device(name, device, plan) for name, device in (devices or {}).items()],
        "timings": {
            "analyze": {row["name"]: row["stats"].get("seconds") for row in rows},
            "spare": (spare.get("stats") or {}).get("seconds"),
        },
        "failures": list(failures),
    }


def _gateway(name: str, result: Mapping[str, Any], *, levels: dict) -> dict[str, Any]:
    stats = result.get("stats") or {}
    occupancy = dict(result.get("occupancy") or {})
    series = normalise_series(occupancy.pop("series", None))
    keep = ("lines", "parsed", "skipped", "sessions", "open_sessions", "distinct_ips",
            "matching_sources", "seconds", "format")  # fmt: skip
    return {
        "name": name,
        "levels": levels,
        "occupancy": occupancy,
        "series": series,
        "servers": [
            {**server, "series": normalise_series(server.get("series"))}
            for server in server_rows(result.get("servers"))
        ],
        "triggered": bool(result.get("triggered")),
        "alert": bool(result.get("alert")),
        "forced": bool(result.get("forced")),
        "window_start": stats.get("window_start"),
        "window_end": stats.get("window_end"),
        "covered_start": stats.get("covered_start", stats.get("window_start")),
        "stats": {key: stats[key] for key in keep if key in stats},
        "rules": list(result.get("rules") or []),
    }


def normalise_series(series: object) -> list[list[Any]]:
    """[[time, percent], ...] from pairs or from mappings with at/time and percent/occupancy."""
    points = []
    for point in series or []:
        if isinstance(point, Mapping):
            moment = point.get("at", point.get("time"))
            value = point.get("percent", point.get("occupancy", point.get("current")))
        elif isinstance(point, (list, tuple)) and len(point) >= 2:
            moment, value = point[0], point[1]
        else:
            continue
        if moment is not None and isinstance(value, (int, float)):
            points.append([str(moment), float(value)])
    return points


def _ips(entries: Iterable[object]) -> list[str]:
    return [entry["ip"] if isinstance(entry, Mapping) else str(entry) for entry in entries or []]


def _decision(rows: list[dict], plan: Mapping[str, Any], *, snapshot: int | None) -> dict:
    inner = plan.get("plan") or {}
    return {
        "triggered": any(row["triggered"] for row in rows),
        "alert": any(row["alert"] for row in rows),
        "forced": any(row["forced"] for row in rows),
        "blocklist": len(plan.get("blocklist") or []),
        "added": _ips(plan.get("added")),
        "renewed": _ips(plan.get("renewed")),
        "removed": [
            {key: entry.get(key) for key in ("ip", "reason", "detail")}
            for entry in plan.get("removed") or [] if isinstance(entry, Mapping)
        ],
        "capped": _ips(plan.get("capped")),
        "refused": [
            dict(entry) for entry in plan.get("refused") or [] if isinstance(entry, Mapping)
        ],
        "snapshot": snapshot if snapshot is not None else inner.get("next_snapshot"),
    }


def _candidates(spare: Mapping[str, Any], plan: Mapping[str, Any]) -> list[dict[str, Any]]:
    added, renewed = set(_ips(plan.get("added"))), set(_ips(plan.get("renewed")))
    capped = set(_ips(plan.get("capped")))
    refused = {entry.get("ip") for entry in plan.get("refused") or [] if isinstance(entry, Mapping)}
    rows = []
    for verdict_of, entries in (("block", spare.get("block")), ("spared", spare.get("spared"))):
        for entry in entries or []:
            ip = entry.get("ip")
            reason = str(entry.get("reason", ""))
            if verdict_of == "spared":
                verdict = "spared"
            elif ip in capped:
                verdict = "held back"
                reason += "; held back by the cap on new entries a run (decide_max_new)"
            elif ip in refused:
                verdict = "refused"
                reason += "; inside a never-block network"
            elif ip in added:
                verdict = "blocked (new)"
            elif ip in renewed:
                verdict = "blocked (renewed)"
            else:
                verdict = "blocked"
            rows.append({
                **{key: entry.get(key) for key in (
                    "ip", "rule", "rules", "sessions", "qualifying_sessions", "longest_session",
                    "open_sessions", "risk", "ptr", "ptr_status", "gateways")},
                "forward_confirmed": entry.get("ptr_status") == "confirmed",
                "verdict": verdict,
                "reason": reason,
            })  # fmt: skip
    rows.sort(key=lambda row: (-(row["qualifying_sessions"] or 0), -(row["sessions"] or 0)))
    return rows


def _device(name: str, device: Mapping[str, Any], plan: Mapping[str, Any]) -> dict[str, Any]:
    """What was pushed to one device: the device's own delta when it reported one (netmiko),
    else the plan's, and the rendered file's diff when the run had --diff."""
    fit = device.get("fit") or {}
    result = device.get("result") or {}
    networks = fit.get("networks")
    if "added" in result or "removed" in result:
        added, removed = list(result.get("added") or []), list(result.get("removed") or [])
    else:
        added = _ips(plan.get("added"))
        removed = [entry.get("ip") for entry in plan.get("removed") or []
                   if isinstance(entry, Mapping)]  # fmt: skip
    return {
        "name": name,
        "platform": device.get("platform"),
        "dest": device.get("dest"),
        "pushed": device.get("pushed"),
        "error": device.get("error"),
        "entries": len(networks) if isinstance(networks, list) else None,
        "warning": fit.get("warning"),
        "added": added,
        "removed": removed,
        "changed": bool(result.get("changed") or (device.get("written") or {}).get("changed")),
        "messages": list(result.get("messages") or []),
        # The rendered file's diff when the run had --diff, else the entries it changed.
        "diff": _unified_diff((device.get("written") or {}).get("diff") or result.get("diff"))
        or "".join([f"-{entry}\n" for entry in removed] + [f"+{entry}\n" for entry in added]),
    }


def _unified_diff(diff: object) -> str:
    parts = diff if isinstance(diff, list) else [diff] if isinstance(diff, Mapping) else []
    chunks = []
    for part in parts:
        if not isinstance(part, Mapping):
            continue
        if part.get("prepared"):
            chunks.append(str(part["prepared"]))
            continue
        before, after = str(part.get("before") or ""), str(part.get("after") or "")
        chunks.extend(difflib.unified_diff(
            before.splitlines(keepends=True), after.splitlines(keepends=True),
            fromfile=str(part.get("before_header", "before")),
            tofile=str(part.get("after_header", "after")),
        ))  # fmt: skip
    return "".join(chunks)


# Files and retention


def _stamp(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%SZ")


def _write_atomic(path: str, text: str, *, mode: int = 0o640) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    descriptor, temporary = tempfile.mkstemp(dir=directory, prefix=".report-")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def write_report(
    report: Mapping[str, Any], *, directory: str, written_at: dt.datetime
) -> dict[str, str]:
    """Write the report as cycle-<UTC time>-<random>.json and .html; returns both paths."""
    try:
        os.makedirs(directory, mode=0o750, exist_ok=True)
        stem = os.path.join(directory, f"cycle-{_stamp(written_at)}-{secrets.token_hex(3)}")
        _write_atomic(stem + ".json", json.dumps(report, indent=1, sort_keys=True) + "\n")
        _write_atomic(stem + ".html", render_cycle_html(report))
    except OSError as exc:
        raise ReportError(
            f"cannot write the evidence report in {directory!r}: {exc.strerror}; check the "
            "directory's owner and free space (notify_report_dir)"
        ) from None
    return {"json": stem + ".json", "html": stem + ".html"}


def prune(directory: str, *, keep_days: float, keep_files: int, now: dt.datetime) -> list[str]:
    """Remove cycle reports older than keep_days or beyond the keep_files newest runs.

    Zero turns a limit off. Only files named as write_report names them are touched.
    """
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    runs: dict[str, list[str]] = {}
    for name in names:
        match = REPORT_NAME.match(name)
        if match:
            runs.setdefault(name.rsplit(".", 1)[0], []).append(name)
    stems = sorted(runs, reverse=True)  # the stamp sorts by time, newest first
    oldest = _stamp(now - dt.timedelta(days=keep_days)) if keep_days > 0 else ""
    doomed = [
        stem for position, stem in enumerate(stems)
        if (keep_files > 0 and position >= keep_files) or stem[len("cycle-"):][:16] < oldest
    ]  # fmt: skip
    removed = []
    for stem in doomed:
        for name in sorted(runs[stem]):
            os.unlink(os.path.join(directory, name))
            removed.append(name)
    return removed


def load_reports(
    directory: str, *, now: dt.datetime | None = None
) -> tuple[list[dict[str, Any]], list[str]]:
    """Every stored cycle report, and the files left out (each with the reason).

    A report is left out whole when it cannot be read, has the wrong shape, or holds a time
    that cannot be read or lies outside EARLIEST to a day after `now`: counting part of it, or
    stretching the summary back to a wrong year, would mislead more than leaving it out.
    """
    latest = (now or dt.datetime.now(dt.UTC)) + dt.timedelta(days=1)
    reports, unreadable = [], []
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        raise ReportError(
            f"no reports directory {directory!r}; run the cycle first or set notify_report_dir"
        ) from None
    for name in names:
        match = REPORT_NAME.match(name)
        if not match or match.group(2) != "json":
            continue
        try:
            with open(os.path.join(directory, name), encoding="utf-8") as handle:
                data = json.load(handle)
            if not isinstance(data, dict) or data.get("version") != REPORT_VERSION:
                raise ValueError("not a cycle report of this version")
            check_report(data, latest=latest)
        except (OSError, ValueError) as exc:
            unreadable.append(f"{name}: {exc}")
            continue
        reports.append(data)
    return reports, unreadable


EARLIEST = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)


def check_report(report: Mapping[str, Any], *, latest: dt.datetime) -> None:
    """Raise ValueError naming the first field of a stored report a summary cannot use."""
    run, decision = report.get("run"), report.get("decision")
    gateways = report.get("gateways")
    if not isinstance(run, Mapping) or not isinstance(decision, Mapping):
        raise ValueError("run and decision must be mappings")
    if not isinstance(gateways, list) or not all(isinstance(g, Mapping) for g in gateways):
        raise ValueError("gateways must be a list of mappings")
    added = decision.get("added") or []
    if not isinstance(added, list) or not all(isinstance(ip, str) for ip in added):
        raise ValueError("decision.added must be a list of addresses")
    if run.get("check_time") is not None or added:
        _checked_time(run.get("check_time"), "run.check_time", latest=latest)
    for gateway in gateways:
        where = f"gateway {str(gateway.get('name'))[:60]!r}"
        occupancy = gateway.get("occupancy") or {}
        current = occupancy.get("current") if isinstance(occupancy, Mapping) else "?"
        if current is not None and (
            isinstance(current, bool) or not isinstance(current, (int, float))
            or not math.isfinite(current)
        ):  # fmt: skip
            raise ValueError(f"{where}: occupancy.current must be a number")
        _checked_time(gateway.get("window_end"), f"{where}: window_end", latest=latest)


def _checked_time(text: object, field_name: str, *, latest: dt.datetime) -> None:
    moment = _moment(text) if isinstance(text, str) else None
    if moment is None:
        raise ValueError(f"{field_name} {str(text)[:40]!r} is not an ISO 8601 time")
    if not EARLIEST <= moment <= latest:
        raise ValueError(
            f"{field_name} {text} lies outside {EARLIEST:%Y-%m-%d} to a day from now"
        )


# Period summaries


def _zone(name: str) -> dt.tzinfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ReportError(
            f"notify_period_timezone: {name!r} is not an IANA time zone such as UTC or Asia/Tokyo"
        ) from None


def _moment(text: object) -> dt.datetime | None:
    try:
        moment = dt.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def _period_of(moment: dt.datetime, *, by: str, zone: dt.tzinfo) -> str:
    local = moment.astimezone(zone)
    return local.strftime("%Y-%m") if by == "month" else local.strftime("%Y-%m-%d")


def _periods_between(first: str, last: str, *, by: str) -> list[str]:
    if by == "month":
        year, month = map(int, first.split("-"))
        periods = []
        while f"{year:04d}-{month:02d}" <= last:
            periods.append(f"{year:04d}-{month:02d}")
            year, month = (year + 1, 1) if month == 12 else (year, month + 1)
        return periods
    day, end = dt.date.fromisoformat(first), dt.date.fromisoformat(last)
    return [(day + dt.timedelta(days=n)).isoformat() for n in range((end - day).days + 1)]


def period_summary(
    reports: Iterable[Mapping[str, Any]], *, by: str = "day", timezone: str = "UTC",
    above: float = 40.0,
) -> dict[str, Any]:
    """Per day or month: checks, checks above `above` percent, sources blocked.

    A check is one gateway at one check time; the same check stored twice (a rerun on the
    same logs) counts once. Sources blocked are the distinct addresses a cycle added.
    """
    if by not in PERIODS:
        raise ReportError(f"by must be day or month, not {by!r}")
    zone = _zone(timezone)
    checks: dict[tuple[str, str], tuple[str, float]] = {}
    blocked: dict[str, set[str]] = {}
    for report in reports:
        for gateway in report.get("gateways") or []:
            moment = _moment(gateway.get("window_end"))
            if moment is None:
                continue
            current = (gateway.get("occupancy") or {}).get("current") or 0.0
            key = (str(gateway.get("name")), moment.astimezone(dt.UTC).isoformat())
            checks[key] = (_period_of(moment, by=by, zone=zone), float(current))
        moment = _moment((report.get("run") or {}).get("check_time"))
        if moment is not None:
            period = _period_of(moment, by=by, zone=zone)
            added = (report.get("decision") or {}).get("added") or []
            blocked.setdefault(period, set()).update(added)

    counted = {period for period, _ in checks.values()} | set(blocked)
    rows = []
    if counted:
        for period in _periods_between(min(counted), max(counted), by=by):
            values = [current for where, current in checks.values() if where == period]
            rows.append({
                "period": period,
                "checks": len(values),
                "above": sum(1 for value in values if value > above),
                "peak": max(values, default=None),
                "blocked": len(blocked.get(period, ())),
            })  # fmt: skip
    return {
        "by": by,
        "timezone": timezone,
        "above": above,
        "periods": rows,
        "totals": {
            "checks": sum(row["checks"] for row in rows),
            "above": sum(row["above"] for row in rows),
            "blocked": len(set().union(*blocked.values())) if blocked else 0,
        },
    }


# Charts (inline SVG)


@dataclass
class _Frame:
    left: float = 56
    top: float = 16
    width: float = 720
    height: float = 240

    def x(self, value: float, low: float, high: float) -> float:
        span = high - low or 1.0
        return round(self.left + self.width * (value - low) / span, 1)

    def y(self, value: float, high: float) -> float:
        return round(self.top + self.height * (1 - value / (high or 1.0)), 1)


def _hline(frame: _Frame, value: float, high: float, *, label: str, colour: str) -> str:
    y = frame.y(value, high)
    return (
        f'<line x1="{frame.left}" y1="{y}" x2="{frame.left + frame.width}" y2="{y}" '
        f'stroke="{colour}" stroke-dasharray="6 4"/>'
        f'<text x="{frame.left + frame.width - 4}" y="{y - 4}" text-anchor="end" '
        f'fill="{colour}">{escape(label)}</text>'
    )


def occupancy_svg(report: Mapping[str, Any]) -> str:
    """The window's occupancy per gateway and named server, with the trigger and alert lines.

    Drawn from the series when the analysis gives one; otherwise from what every analysis
    reports: the mean over the covered window, the peak at its time, the value at the check.
    """
    marks = level_marks(report)
    lines = []
    for gateway in report.get("gateways") or []:
        lines.append((gateway["name"], gateway))
        for server in gateway.get("servers") or []:
            lines.append((f"{gateway['name']} / {server['name']}", {
                "occupancy": server, "series": server.get("series") or [],
                "covered_start": gateway.get("covered_start"),
                "window_end": gateway.get("window_end"),
            }))  # fmt: skip
    times = [
        _moment(value).timestamp()
        for _, line in lines
        for value in [line.get("covered_start"), line.get("window_end")]
        + [point[0] for point in line.get("series") or []]
        if _moment(value) is not None
    ]
    if not times:
        return '<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"></svg>'
    low, high_time = min(times), max(times)
    values = [value for _, value, _ in marks] or [0.0]
    for _, line in lines:
        occupancy = line.get("occupancy") or {}
        values += [float(occupancy.get(key) or 0) for key in ("peak", "current", "mean")]
        values += [point[1] for point in line.get("series") or []]
    top = max(10.0, min(100.0, max(values) * 1.15)) if max(values) <= 100 else max(values) * 1.05

    frame = _Frame()
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 840 {frame.height + 110}" '
        'role="img" aria-label="Session occupancy over the analysed window" '
        'font-family="sans-serif" font-size="11">',
        f'<rect x="{frame.left}" y="{frame.top}" width="{frame.width}" height="{frame.height}" '
        'fill="#fafafa" stroke="#999"/>',
    ]
    for tick in _ticks(top):
        y = frame.y(tick, top)
        parts.append(f'<text x="{frame.left - 6}" y="{y + 4}" text-anchor="end">{tick:g}%</text>')
    for moment in (low, high_time):
        label = dt.datetime.fromtimestamp(moment, dt.UTC).strftime("%H:%M:%S UTC")
        x, y = frame.x(moment, low, high_time), frame.top + frame.height + 14
        parts.append(f'<text x="{x}" y="{y}" text-anchor="middle">{label}</text>')
    for kind, value, names in marks:
        label = f"{kind} {value:g}%" + (f" ({', '.join(names)})" if names else "")
        colour = "#c62828" if kind == "alert" else "#f9a825"
        parts.append(_hline(frame, value, top, label=label, colour=colour))

    legend_y = frame.top + frame.height + 34
    for index, (name, line) in enumerate(lines):
        colour = COLOURS[index % len(COLOURS)]
        parts += _line_marks(frame, line, low=low, high=high_time, top=top, colour=colour)
        occupancy = line.get("occupancy") or {}
        label = (
            f"{name}: now {occupancy.get('current', '?')}%, peak {occupancy.get('peak', '?')}%"
            f" at {occupancy.get('peak_at', '?')}, mean {occupancy.get('mean', '?')}%"
        )
        y = legend_y + 16 * index
        parts.append(f'<rect x="{frame.left}" y="{y - 9}" width="10" height="10" fill="{colour}"/>'
                     f'<text x="{frame.left + 16}" y="{y}">{escape(label)}</text>')  # fmt: skip
    parts.append("</svg>")
    return "".join(parts)


def level_marks(report: Mapping[str, Any]) -> list[tuple[str, float, list[str]]]:
    """The trigger and alert lines to draw: (kind, percent, gateways named on the line).

    Gateways sharing a level share its line; the line names them only when levels differ.
    A report without per-gateway levels draws the report's own.
    """
    default = report.get("levels") or {}
    marks = []
    for kind in ("trigger", "alert"):
        by_value: dict[float, list[str]] = {}
        for gateway in report.get("gateways") or []:
            value = (gateway.get("levels") or {}).get(kind, default.get(kind))
            if isinstance(value, (int, float)):
                by_value.setdefault(float(value), []).append(str(gateway.get("name")))
        if not by_value and isinstance(default.get(kind), (int, float)):
            by_value[float(default[kind])] = []
        shared = len(by_value) == 1
        marks += [(kind, value, [] if shared else names) for value, names in by_value.items()]
    return marks


def _ticks(top: float) -> list[float]:
    step = next(step for step in (5, 10, 20, 25, 50, 100, 250, 500) if top / step <= 6)
    return [step * n for n in range(int(top // step) + 1)]


def _line_marks(frame: _Frame, line: Mapping[str, Any], *, low: float, high: float, top: float,
                colour: str) -> list[str]:
    occupancy = line.get("occupancy") or {}
    series = [(_moment(at), value) for at, value in line.get("series") or []]
    series = [(moment.timestamp(), value) for moment, value in series if moment is not None]
    marks = []
    if series:
        points = " ".join(f"{frame.x(t, low, high)},{frame.y(v, top)}" for t, v in sorted(series))
        marks.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" '
                     f'points="{points}"/>')  # fmt: skip
    start, end = _moment(line.get("covered_start")), _moment(line.get("window_end"))
    if not series and start and end and occupancy.get("mean") is not None:
        y = frame.y(float(occupancy["mean"]), top)
        marks.append(
            f'<line x1="{frame.x(start.timestamp(), low, high)}" y1="{y}" '
            f'x2="{frame.x(end.timestamp(), low, high)}" y2="{y}" stroke="{colour}" '
            f'stroke-dasharray="2 3"/><text x="{frame.x(start.timestamp(), low, high) + 4}" '
            f'y="{y + 12}" fill="{colour}">mean {escape(str(occupancy["mean"]))}%</text>'
        )
    peak_at = _moment(occupancy.get("peak_at"))
    if peak_at and occupancy.get("peak") is not None:
        marks.append(_dot(frame.x(peak_at.timestamp(), low, high),
                          frame.y(float(occupancy["peak"]), top), colour,
                          f"peak {occupancy['peak']}%"))  # fmt: skip
    if end and occupancy.get("current") is not None:
        marks.append(_dot(frame.x(end.timestamp(), low, high),
                          frame.y(float(occupancy["current"]), top), colour,
                          f"at the check {occupancy['current']}%"))  # fmt: skip
    return marks


def _dot(x: float, y: float, colour: str, label: str) -> str:
    # Labels near the right edge go to the left of their point.
    anchor, shift = ("end", -6) if x > _Frame.left + 0.8 * _Frame.width else ("start", 6)
    return (f'<circle cx="{x}" cy="{y}" r="4" fill="{colour}"><title>{escape(label)}</title>'
            f'</circle><text x="{x + shift}" y="{y - 6}" text-anchor="{anchor}" '
            f'fill="{colour}">{escape(label)}</text>')  # fmt: skip


def period_svg(summary: Mapping[str, Any]) -> str:
    """Two bar panels over the periods: checks above the level, and sources blocked."""
    rows = summary.get("periods") or []
    frame_width, panel, gap = 760.0, 150.0, 40.0
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 840 {2 * panel + 2 * gap + 40}" '
        'role="img" aria-label="Checks above the alert level and sources blocked per period" '
        'font-family="sans-serif" font-size="11">'
    ]
    series = (
        ("above", f"checks above {summary.get('above')}%", "#c62828"),
        ("blocked", "sources blocked", "#1565c0"),
    )
    width = frame_width / max(len(rows), 1)
    for index, (key, title, colour) in enumerate(series):
        top = gap + index * (panel + gap)
        highest = max([row[key] for row in rows] + [1])
        parts.append(f'<text x="56" y="{top - 8}" font-weight="bold">{escape(title)}</text>'
                     f'<rect x="56" y="{top}" width="{frame_width}" height="{panel}" '
                     'fill="#fafafa" stroke="#999"/>'
                     f'<text x="50" y="{top + 10}" text-anchor="end">{highest}</text>'
                     f'<text x="50" y="{top + panel}" text-anchor="end">0</text>')  # fmt: skip
        for position, row in enumerate(rows):
            height = round(panel * row[key] / highest, 1)
            x = round(56 + position * width + width * 0.15, 1)
            parts.append(
                f'<rect x="{x}" y="{top + panel - height}" width="{round(width * 0.7, 1)}" '
                f'height="{height}" fill="{colour}"><title>{escape(row["period"])}: '
                f"{row[key]}</title></rect>"
            )
            if len(rows) <= 31 and row[key]:
                parts.append(f'<text x="{x + width * 0.35}" y="{top + panel - height - 3}" '
                             f'text-anchor="middle">{row[key]}</text>')  # fmt: skip
    step = max(1, len(rows) // 12)
    for position, row in enumerate(rows):
        if position % step == 0:
            x = round(56 + (position + 0.5) * width, 1)
            parts.append(f'<text x="{x}" y="{2 * panel + 2 * gap + 16}" text-anchor="middle">'
                         f'{escape(row["period"])}</text>')  # fmt: skip
    parts.append("</svg>")
    return "".join(parts)


# Pages

_ENVIRONMENT = Environment(autoescape=True, trim_blocks=True, lstrip_blocks=True)
_STYLE = """
body{font-family:sans-serif;margin:1.5em;color:#222}table{border-collapse:collapse;margin:.5em 0}
th,td{border:1px solid #bbb;padding:.2em .5em;text-align:left;vertical-align:top;font-size:90%}
th{background:#eee}.num{text-align:right}.alert{color:#c62828;font-weight:bold}
pre{background:#f4f4f4;padding:.5em;overflow-x:auto;font-size:85%}
"""

_CYCLE_PAGE = _ENVIRONMENT.from_string("""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>smtpguard cycle {{ run.check_time }}</title><style>{{ style }}</style></head><body>
<h1>smtpguard cycle at {{ run.check_time }}</h1>
<p>{{ run.kind }} run, report written {{ run.written_at }}.
{% for gateway in gateways if gateway.alert %}
<span class="alert">{{ gateway.name }}: occupancy above its alert level
({{ (gateway.levels or levels).alert }}%).</span>
{% endfor %}
</p>
<h2>Occupancy</h2>
{{ chart }}
<table><tr><th>gateway</th><th>now</th><th>peak</th><th>mean</th><th>window</th>
<th>decision</th></tr>
{% for gateway in gateways %}
{% set occupancy = gateway.occupancy %}
<tr><td>{{ gateway.name }}</td>
<td class="num">{{ occupancy.current }}%
 ({{ occupancy.current_sessions }}/{{ occupancy.capacity }})</td>
<td class="num">{{ occupancy.peak }}% at {{ occupancy.peak_at }}</td>
<td class="num">{{ occupancy.mean }}%</td>
<td>{{ gateway.window_start }} to {{ gateway.window_end }}</td>
<td>{{ 'triggered' if gateway.triggered else 'below the trigger' }}
{{- ' (forced)' if gateway.forced }}{{ ', ALERT' if gateway.alert }}
 (trigger {{ (gateway.levels or levels).trigger }}%,
 alert {{ (gateway.levels or levels).alert }}%)</td></tr>
{% for server in gateway.servers %}
<tr><td>&nbsp;&nbsp;{{ server.name }}</td><td class="num">{{ server.current }}%</td>
<td class="num">{{ server.peak }}%{% if server.peak_at %} at {{ server.peak_at }}{% endif %}</td>
<td class="num">{{ server.mean }}%</td><td></td><td></td></tr>
{% endfor %}
{% endfor %}
</table>
<h2>Decision</h2>
<p>{{ 'Triggered' if decision.triggered else 'Below the trigger level' }}
{%- if gateways | length > 1 %} (each gateway against its own levels)
{%- else %}{% set own = (gateways[0].levels if gateways and gateways[0].levels else levels) %}
 (trigger {{ own.trigger }}%, alert {{ own.alert }}%){% endif %}.
Block list: {{ decision.blocklist }} entries; {{ decision.added | length }} added,
{{ decision.renewed | length }} renewed, {{ decision.removed | length }} removed,
{{ decision.capped | length }} held back
{%- if decision.snapshot is not none %}; snapshot {{ decision.snapshot }}{% endif %}.</p>
{% if decision.removed %}
<table><tr><th>removed</th><th>reason</th><th>detail</th></tr>
{% for entry in decision.removed %}
<tr><td>{{ entry.ip }}</td><td>{{ entry.reason }}</td><td>{{ entry.detail }}</td></tr>
{% endfor %}
</table>
{% endif %}
<h2>Candidates ({{ candidates | length }})</h2>
<table><tr><th>source</th><th>rule</th><th>sessions</th><th>qualifying</th>
<th>longest (s)</th><th>open</th><th>risk</th><th>PTR name</th><th>forward check</th>
<th>verdict</th><th>why</th></tr>
{% for c in candidates %}
<tr><td>{{ c.ip }}</td>
<td>{{ c.rule }}
{%- if c.rules and c.rules | length > 1 %} ({{ c.rules | join(', ') }}){% endif %}</td>
<td class="num">{{ c.sessions }}</td><td class="num">{{ c.qualifying_sessions }}</td>
<td class="num">{{ c.longest_session }}</td><td class="num">{{ c.open_sessions }}</td>
<td class="num">{{ c.risk }}%</td><td>{{ c.ptr or '' }}</td><td>{{ c.ptr_status }}</td>
<td>{{ c.verdict }}</td><td>{{ c.reason }}</td></tr>
{% endfor %}
</table>
<h2>Devices</h2>
{% for device in devices %}
<h3>{{ device.name }} ({{ device.platform }}{% if device.dest %}, {{ device.dest }}{% endif %})
</h3>
<p>{{ 'took the block list' if device.pushed else 'did NOT take the block list' }}
{%- if device.error %} ({{ device.error }}){% endif %};
{{ device.entries if device.entries is not none else '?' }} entries;
added {{ device.added | join(', ') or 'none' }};
removed {{ device.removed | join(', ') or 'none' }}.
{% if device.warning %}Warning: {{ device.warning }}{% endif %}</p>
{% for line in device.messages %}<p>{{ line }}</p>{% endfor %}
{% if device.diff %}<pre>{{ device.diff }}</pre>{% endif %}
{% endfor %}
<h2>Timings</h2>
<p>{% for name, seconds in timings.analyze.items() %}
analysis of {{ name }}: {{ seconds }} s;
{% endfor %}
sparing (DNS): {{ timings.spare }} s</p>
<h2>Failures</h2>
{% if failures %}
<ul>{% for line in failures %}<li>{{ line }}</li>{% endfor %}</ul>
{% else %}
<p>none</p>
{% endif %}
</body></html>
""")

_PERIOD_PAGE = _ENVIRONMENT.from_string("""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>smtpguard per {{ by }}</title><style>{{ style }}</style></head><body>
<h1>smtpguard per {{ by }} ({{ timezone }})</h1>
<p>{{ totals.checks }} checks, {{ totals.above }} above {{ above }}%,
{{ totals.blocked }} sources blocked.</p>
{{ chart }}
<table><tr><th>{{ by }}</th><th>checks</th><th>above {{ above }}%</th>
<th>highest occupancy</th><th>sources blocked</th></tr>
{% for row in periods %}
<tr><td>{{ row.period }}</td><td class="num">{{ row.checks }}</td>
<td class="num">{{ row.above }}</td>
<td class="num">{{ '%s%%' % row.peak if row.peak is not none else '' }}</td>
<td class="num">{{ row.blocked }}</td></tr>
{% endfor %}
</table></body></html>
""")


def render_cycle_html(report: Mapping[str, Any]) -> str:
    return _CYCLE_PAGE.render(**report, chart=Markup(occupancy_svg(report)), style=Markup(_STYLE))


def render_period_html(summary: Mapping[str, Any]) -> str:
    return _PERIOD_PAGE.render(**summary, chart=Markup(period_svg(summary)), style=Markup(_STYLE))


def write_text(path: str, text: str) -> bool:
    """Write when the content differs; returns whether it did."""
    try:
        with open(path, encoding="utf-8") as handle:
            if handle.read() == text:
                return False
    except FileNotFoundError:
        pass
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        _write_atomic(path, text)
    except OSError as exc:
        raise ReportError(f"cannot write {path!r}: {exc.strerror}") from None
    return True
