"""Cisco ESA text mail logs (`mail_logs`) for tests, and the scenario of the format's tests.

    log = EsaLog()                                   # the appliance's own file
    log.session("192.0.2.7", start=NOW - 120, duration=40, sbrs="-9.0")
    log.write(tmp_path / "mail_logs")

Styles of the line prefix:
    file:  "Thu Dec  3 10:00:00 2026 Info: ..."              (what the appliance writes)
    push:  "<166>Dec  3 10:00:00 mail_logs: Info: ..."       (syslog push, no host)
    relay: "Dec  3 10:00:00 esa1 mail_logs: Info: ..."       (written by a syslog server)

Run as a script, it writes the scenario again: tests/data/formats/cisco_esa/mail_logs (the
appliance's own file around a mixed flood) and answer.json beside it, whose figures come from
the sessions the script put in, not from reading the log back.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime, tzinfo
from pathlib import Path

NOW = datetime(2026, 12, 3, 10, 0, 0, tzinfo=UTC).timestamp()
NOW_ISO = "2026-12-03T10:00:00+00:00"

STYLES = ("file", "push", "relay")
INTERFACE = "Data 1 (198.51.100.10)"

SCENARIO = Path(__file__).resolve().parents[1] / "data" / "formats" / "cisco_esa"
SCENARIO_CAPACITY = 40
SCENARIO_WINDOW = 1800.0
# The internal mail server the scenario's gateway delivers to.
SCENARIO_SERVER = "198.51.100.25"


def stamp(when: float, style: str = "file", *, zone: tzinfo = UTC) -> str:
    """The timestamp of a line at `when`: ctime for the file style, syslog for the others."""
    moment = datetime.fromtimestamp(when, tz=zone)
    clock = f"{moment:%b} {moment.day:2d} {moment:%H:%M:%S}"
    if style == "file":
        return f"{moment:%a} {clock} {moment.year}"
    if style in ("push", "relay"):
        return clock
    raise ValueError(f"unknown ESA prefix style {style!r}")


class EsaLog:
    """Lines of an ESA mail log, built from sessions and raw messages, sorted by time (lines
    at the same time keep the order they were added in)."""

    def __init__(
        self,
        *,
        style: str = "file",
        host: str = "esa1",
        zone: tzinfo = UTC,
        first_icid: int = 3000,
        first_mid: int = 60000,
        first_dcid: int = 7000,
        newline: str = "\n",
    ):
        self.style = style
        self.host = host
        self.zone = zone
        self.newline = newline
        self._icid, self._mid, self._dcid = first_icid, first_mid, first_dcid
        self._lines: list[tuple[float, int, str]] = []

    def next_icid(self) -> int:
        self._icid += 1
        return self._icid

    def next_mid(self) -> int:
        self._mid += 1
        return self._mid

    def next_dcid(self) -> int:
        self._dcid += 1
        return self._dcid

    def line(
        self,
        when: float,
        message: str,
        *,
        level: str = "Info",
        host: str | None = None,
        style: str | None = None,
    ) -> EsaLog:
        """Add one line: the prefix of the style, the level, the message."""
        style = style or self.style
        prefix = stamp(when, style, zone=self.zone)
        if style == "push":
            prefix = f"<166>{prefix} mail_logs:"
        elif style == "relay":
            prefix = f"{prefix} {host or self.host} mail_logs:"
        self._lines.append((when, len(self._lines), f"{prefix} {level}: {message}"))
        return self

    def raw(self, when: float, text: str) -> EsaLog:
        """Add a line exactly as given, placed at `when` in the sorted output."""
        self._lines.append((when, len(self._lines), text))
        return self

    def connect(
        self, when: float, source: str, *, icid: int, ptr: str = "unknown", **where
    ) -> EsaLog:
        verified = "no" if ptr == "unknown" else "yes"
        return self.line(
            when,
            f"New SMTP ICID {icid} interface {INTERFACE} address {source} "
            f"reverse dns host {ptr} verified {verified}",
            **where,
        )

    def policy(
        self,
        when: float,
        *,
        icid: int,
        action: str = "ACCEPT",
        sbrs: str = "None",
        group: str = "UNKNOWNLIST",
        **where,
    ) -> EsaLog:
        return self.line(
            when,
            f"ICID {icid} {action} SG {group} match sbrs[-1.0:10.0] SBRS {sbrs} "
            "country not enabled",
            **where,
        )

    def message(self, when: float, *, icid: int, mid: int | None = None, **where) -> int:
        """A message received in session `icid`; returns its MID."""
        mid = self.next_mid() if mid is None else mid
        self.line(when, f"Start MID {mid} ICID {icid}", **where)
        self.line(when, f"MID {mid} ICID {icid} From: <sender@example.net>", **where)
        self.line(when, f"MID {mid} ICID {icid} RID 0 To: <user@campus.example>", **where)
        self.line(when, f"MID {mid} Subject 'ICID {icid} close'", **where)
        self.line(when, f"MID {mid} ready 2048 bytes from <sender@example.net>", **where)
        return mid

    def session(
        self,
        source: str,
        *,
        start: float,
        duration: float | None,
        sbrs: str = "None",
        action: str = "ACCEPT",
        messages: int = 0,
        ending: str | None = None,
        icid: int | None = None,
        ptr: str = "unknown",
        **where,
    ) -> int:
        """A whole session: connect, policy line, `messages` messages, and `ICID N close` after
        `duration` seconds (preceded by `ICID N <ending>`, such as `lost`, when given);
        `duration=None` leaves it open. Returns the ICID."""
        icid = self.next_icid() if icid is None else icid
        self.connect(start, source, icid=icid, ptr=ptr, **where)
        self.policy(start, icid=icid, action=action, sbrs=sbrs, **where)
        at = start + 1 if duration is None or duration >= 2 else start
        for _ in range(messages):
            self.message(at, icid=icid, **where)
        if duration is not None:
            if ending:
                self.line(start + duration, f"ICID {icid} {ending}", **where)
            self.line(start + duration, f"ICID {icid} close", **where)
        return icid

    def delivery(
        self,
        server: str,
        *,
        start: float,
        duration: float | None,
        mids: list[int],
        delayed: str | None = None,
        **where,
    ) -> int:
        """A delivery connection to `server` carrying `mids`; `delayed` is the reply code of a
        temporary failure for the first of them. Returns the DCID."""
        dcid = self.next_dcid()
        self.line(
            start, f"New SMTP DCID {dcid} interface 198.51.100.10 address {server} port 25", **where
        )
        for mid in mids:
            self.line(start, f"Delivery start DCID {dcid} MID {mid} to RID [0]", **where)
            if delayed is not None and mid == mids[0]:
                self.line(
                    start,
                    f"Delayed: DCID {dcid} MID {mid} From: <sender@example.net> To: "
                    f"<user@campus.example> RID 0 - 4.3.2 - Not accepting messages at this "
                    f"time ('{delayed}', ['{delayed} 4.3.2 try again later'])",
                    **where,
                )
            else:
                self.line(start, f"Message done DCID {dcid} MID {mid} to RID [0]", **where)
        if duration is not None:
            self.line(start + duration, f"DCID {dcid} close", **where)
        return dcid

    def text(self) -> str:
        return "".join(line + self.newline for _, _, line in sorted(self._lines))

    def data(self) -> bytes:
        return self.text().encode()

    def write(self, path: str | os.PathLike, *, mtime: float | None = None) -> Path:
        path = Path(path)
        path.write_bytes(self.data())
        if mtime is not None:
            os.utime(path, (mtime, mtime))
        return path


def scenario() -> tuple[EsaLog, dict]:
    """The scenario log and its answer (the paper's default rules, capacity 40, a 30-minute
    window ending at NOW): which sources match which rule, occupancy now and at its peak, and
    the internal server's sessions."""
    specs = _scenario_sessions()
    log = EsaLog(first_icid=824100, first_mid=26900, first_dcid=9100)
    log.line(NOW - 2400, "Begin Logfile")
    log.line(NOW - 2400, "Version: 15.0.0-104 SN: 0000000000AA-XXXXXXX")
    log.line(NOW - 2400, "Time offset from UTC: 0 seconds")
    intervals: list[tuple[float, float | None, str]] = []  # (start, end or None if open, source)
    deliveries = 0

    # In order of their start, so that ICIDs, MIDs and DCIDs grow with time as on an appliance.
    for start, source, duration, options, extra in sorted(specs, key=lambda spec: spec[0]):
        limited = extra == "limit"
        icid = log.session(source, start=start, duration=None if limited else duration, **options)
        intervals.append((start, None if duration is None else start + duration, source))
        if limited:  # refused at once, as AsyncOS logs it
            log.line(
                start,
                f"System limit reached: connection limit for IP {source} on "
                f"listener Incoming ICID {icid}: max: 3",
                level="Warning",
            )
            log.line(start, f"ICID {icid} Receiving Failed: Connection limit exceeded")
            log.line(start, f"ICID {icid} close")
        elif extra in ("deliver", "delay"):
            mid = log.message(start + 1, icid=icid)
            log.delivery(
                SCENARIO_SERVER,
                start=start + 3,
                duration=2,
                mids=[mid],
                delayed="421" if extra == "delay" else None,
            )
            deliveries += 1
    log.delivery(SCENARIO_SERVER, start=NOW - 20, duration=None, mids=[])  # still open now
    deliveries += 1

    return log, _answer(intervals, deliveries=deliveries)


def _scenario_sessions() -> list[tuple[float, str, float | None, dict, str | None]]:
    """(start, source, duration or None while open, EsaLog.session options, extra lines)."""
    specs: list[tuple[float, str, float | None, dict, str | None]] = []
    # SMTP DoS (cond1): 45 sessions of 25 s, one every 30 s, SBRS -9.5 (97.5%).
    specs += [
        (NOW - 1500 + n * 30, "203.0.113.9", 25, {"sbrs": "-9.5", "messages": 1}, None)
        for n in range(45)
    ]
    # Slow post (cond2): one session of 250 s, one still open after 400 s, SBRS -9.0 (95%).
    specs += [
        (NOW - 1200, "198.51.100.7", 250, {"sbrs": "-9.0"}, None),
        (NOW - 400, "198.51.100.7", None, {"sbrs": "-9.0"}, None),
    ]
    # Just below cond1's risk: 50 sessions of 22 s, SBRS -8.0 (90%); every 10th is lost.
    specs += [
        (
            NOW - 1400 + n * 20,
            "2001:db8::bad",
            22,
            {"sbrs": "-8.0", "ending": "lost" if n % 10 == 9 else None},
            None,
        )
        for n in range(50)
    ]
    # SMTP DDoS bot with no score (cond3): 300 sessions of 1 s, one every 5 s.
    specs += [(NOW - 1550 + n * 5, "192.0.2.200", 1, {"sbrs": "None"}, None) for n in range(300)]
    # A many-source burst: 15 sources, one session of 60 s each, no score.
    specs += [(NOW - 600 + n, f"203.0.113.{100 + n}", 60, {}, None) for n in range(15)]
    # Refused at once: REJECT (30 sessions) and TCPREFUSE (5), SBRS -9.9 (99.5%).
    specs += [
        (NOW - 1300 + n * 40, "192.0.2.99", 1, {"sbrs": "-9.9", "action": "REJECT"}, None)
        for n in range(30)
    ]
    specs += [
        (NOW - 900 + n * 60, "192.0.2.98", 0, {"sbrs": "-9.9", "action": "TCPREFUSE"}, None)
        for n in range(5)
    ]
    # Over its connection limit: 3 sessions of 30 s, and a fourth refused at once.
    specs += [
        (
            NOW - 700 + n * 3,
            "203.0.113.77",
            30 if n < 3 else 0,
            {"sbrs": "1.2"},
            "limit" if n == 3 else None,
        )
        for n in range(4)
    ]
    # Ordinary senders delivered to the internal server; one delivery is delayed with 421.
    specs += [
        (
            NOW - 1700 + n * 140,
            f"192.0.2.{10 + n % 4}",
            6,
            {"sbrs": "4.0"},
            "delay" if n == 5 else "deliver",
        )
        for n in range(12)
    ]
    # Ordinary senders still connected now.
    specs += [
        (NOW - 50 + n * 4, f"2001:db8:5::{n + 1}", None, {"sbrs": "2.5"}, None) for n in range(10)
    ]
    return specs


def _answer(intervals: list[tuple[float, float | None, str]], *, deliveries: int) -> dict:
    window_start = NOW - SCENARIO_WINDOW
    risks = {
        "203.0.113.9": 97.5,
        "198.51.100.7": 95.0,
        "2001:db8::bad": 90.0,
        "192.0.2.99": 99.5,
        "192.0.2.98": 99.5,
        "203.0.113.77": 44.0,
        **{f"192.0.2.{10 + n}": 30.0 for n in range(4)},
        **{f"2001:db8:5::{n + 1}": 37.5 for n in range(10)},
    }
    rules = (("cond1", 20, 40, 95), ("cond2", 200, 1, 95), ("cond3", 0, 300, 0))

    sessions: dict[str, list[float]] = {}
    deltas: dict[float, int] = {}
    current = 0
    for start, end, source in intervals:
        if end is not None and end < window_start:
            continue
        duration = (end if end is not None else NOW) - start
        sessions.setdefault(source, []).append(duration)
        begin = max(start, window_start)
        deltas[begin] = deltas.get(begin, 0) + 1
        if end is None:
            current += 1
        else:
            deltas[end] = deltas.get(end, 0) - 1

    level = peak = 0
    for moment in sorted(deltas):
        level += deltas[moment]
        peak = max(peak, level)

    candidates = {}
    for source, durations in sorted(sessions.items()):
        matched = [
            name
            for name, seconds, count, risk in rules
            if sum(duration >= seconds for duration in durations) >= count
            and risks.get(source, 0.0) >= risk
        ]
        if matched:
            candidates[source] = {"rule": matched[0], "rules": matched, "sessions": len(durations)}
    return {
        "now": NOW_ISO,
        "capacity": SCENARIO_CAPACITY,
        "window": int(SCENARIO_WINDOW),
        "candidates": candidates,
        "occupancy": {"current_sessions": current, "peak_sessions": peak},
        "sessions": sum(len(durations) for durations in sessions.values()),
        "risks": risks,
        "server": {
            "address": SCENARIO_SERVER,
            "sessions": deliveries,
            "current_sessions": 1,
            "replies_421": 1,
        },
        "notes": {
            "192.0.2.99": {"rejected": 30},
            "192.0.2.98": {"rejected": 5},
            "203.0.113.77": {"connection_limit": 1},
            # the sender of the delayed delivery: n == 5 above, 192.0.2.(10 + 5 % 4)
            "192.0.2.11": {"server_421": 1},
        },
    }


def write_scenario(directory: Path = SCENARIO) -> None:
    log, answer = scenario()
    directory.mkdir(parents=True, exist_ok=True)
    log.write(directory / "mail_logs")
    (directory / "answer.json").write_text(json.dumps(answer, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    write_scenario(Path(sys.argv[1]) if len(sys.argv) > 1 else SCENARIO)
