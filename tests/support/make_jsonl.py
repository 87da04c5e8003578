"""JSON-lines gateway logs for tests, and the JSON-lines scenario with its known answer.

    log = JsonlLog()
    log.session("192.0.2.7", start=NOW - 120, duration=40)      # connect ... disconnect
    log.record(NOW - 60, src="192.0.2.8", event="connect", session="s9", risk=97)
    data = log.data()

Run as a script to write the scenario:

    python tests/support/make_jsonl.py tests/data/formats/jsonl

The scenario is the shape of a gateway that exports nested JSON (the client under `client`,
its score under `reputation`, the campus server under `upstream`, `open`/`close`/`timeout`
actions), read with the `jsonl_fields` and `jsonl_events` in `answer.json`. The answer (the
sources the default rules select from the risk in the log, the occupancy now and at its peak)
is worked out from the sessions the script made, not by reading the log back.
"""

from __future__ import annotations

import json
import random
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

NOW = datetime(2026, 12, 3, 10, 10, 0, tzinfo=UTC).timestamp()
WINDOW = 1800.0
CAPACITY = 12  # 3 sessions open now: 25%, above the 20% trigger, below the 40% alert
SERVER = "192.0.2.225"  # the campus mail server behind the gateway

# How the scenario's gateway names things, as flood_analyze options.
FIELDS = {
    "time": "@timestamp",
    "source": "client.ip",
    "session": "session_id",
    "event": "action",
    "risk": "reputation.risk",
    "destination": "upstream",
    "reply": "response",
}
EVENTS = {"connect": ["open"], "disconnect": ["close"], "ending": ["timeout"]}


def iso(when: float) -> str:
    moment = datetime.fromtimestamp(when, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class JsonlLog:
    """JSON records sorted by time, one a line."""

    def __init__(self) -> None:
        self._lines: list[tuple[float, int, str]] = []
        self._session = 0

    def record(self, when: float, *, time: Any = None, **fields: Any) -> JsonlLog:
        """One record at `when`; `time` (default: ISO text of `when`) is its time field."""
        body = {"time": iso(when) if time is None else time, **fields}
        return self.raw(when, json.dumps(body, separators=(",", ":")))

    def raw(self, when: float, text: str) -> JsonlLog:
        self._lines.append((when, len(self._lines), text))
        return self

    def new_session(self) -> str:
        self._session += 1
        return f"s{self._session:05d}"

    def session(self, source: str, *, start: float, duration: float | None,
                risk: float | None = None, **extra: Any) -> str:  # fmt: skip
        """connect (with `risk` when given) and disconnect at `start + duration` (None: open)."""
        session = self.new_session()
        scored = {} if risk is None else {"risk": risk}
        self.record(start, src=source, session=session, event="connect", **scored, **extra)
        if duration is not None:
            self.record(start + duration, src=source, session=session, event="disconnect",
                        **extra)  # fmt: skip
        return session

    def text(self) -> str:
        return "".join(text + "\n" for _, _, text in sorted(self._lines))

    def data(self) -> bytes:
        return self.text().encode()


def _nested(when: float, source: str, port: int, session: str, action: str, **more: Any) -> str:
    body: dict[str, Any] = {
        "@timestamp": iso(when),
        "client": {"ip": source, "port": port},
        "session_id": session,
        "action": action,
        "gateway": {"name": "gw1", "version": "2.4"},
    }
    body.update(more)
    return json.dumps(body, separators=(",", ":"))


def scenario(seed: int = 7) -> tuple[bytes, dict]:
    """The scenario's log and its answer."""
    rng = random.Random(seed)
    lines: list[tuple[float, int, str]] = []
    sessions: list[tuple[float, float | None]] = []
    server_sessions: list[tuple[float, float | None]] = []
    counter = iter(range(1, 10**6))

    def add(when: float, text: str) -> None:
        lines.append((when, len(lines), text))

    def place(source: str, start: float, duration: float | None, *, risk: float,
              end_action: str = "close", response: str | None = None,
              relayed: bool = False) -> None:  # fmt: skip
        session = f"gw1-{next(counter):06d}"
        port = rng.randint(1024, 65535)
        more = {"upstream": SERVER} if relayed else {}
        add(start, _nested(start, source, port, session, "open",
                           reputation={"risk": risk, "lists": ["a", "b"]}, **more))  # fmt: skip
        end = None if duration is None else start + duration
        if end is not None:
            said = {} if response is None else {"response": response}
            add(end, _nested(end, source, port, session, end_action, **said, **more))
            if end_action == "timeout":  # the gateway writes the close after the timeout
                add(end + 0.5, _nested(end + 0.5, source, port, session, "close", **more))
        sessions.append((start, end))
        if relayed:
            server_sessions.append((start, end))

    for index in range(30):  # ordinary senders, relayed to the campus server
        source = f"198.51.100.{100 + index}"
        for _ in range(rng.randint(1, 2)):
            place(source, NOW - rng.uniform(60, 3000), rng.uniform(2, 14), risk=rng.uniform(0, 40),
                  relayed=True)  # fmt: skip
    place("2001:db8::25", NOW - 700, 30, risk=10)
    for index in range(310):  # cond3: refused floods, risk too low for cond1
        place("203.0.113.50", NOW - 900 + index * 2, 1.0, risk=60,
              response="421 4.7.0 Too many connections from your address")  # fmt: skip
    for index in range(45):  # cond1
        place("203.0.113.9", NOW - 1500 + index * 20, 25, risk=96)
    for index in range(39):  # one session short of cond1
        place("203.0.113.10", NOW - 1400 + index * 20, 25, risk=99)
    place("198.51.100.23", NOW - 720, None, risk=97)  # cond2: a slow post, still open
    for index in range(5):  # timeouts: each session ends at its timeout, 60 s
        place("192.0.2.60", NOW - 1200 + index * 100, 60, risk=20, end_action="timeout")
    place("192.0.2.45", NOW - 5, None, risk=5)
    place("192.0.2.46", NOW - 3, None, risk=5)

    # Lines a real export carries besides sessions, and one a broken writer left.
    add(NOW - 1000, json.dumps({"@timestamp": iso(NOW - 1000), "action": "config_reload"}))
    add(NOW - 999, '{"@timestamp": "' + iso(NOW - 999) + '", "client": {"ip": "192.0.2.9"')

    data = "".join(text + "\n" for _, _, text in sorted(lines)).encode()
    answer = {
        "now": datetime.fromtimestamp(NOW, tz=UTC).isoformat(),
        "capacity": CAPACITY,
        "jsonl_fields": FIELDS,
        "jsonl_events": EVENTS,
        "candidates": {"203.0.113.50": "cond3", "203.0.113.9": "cond1", "198.51.100.23": "cond2"},
        "replies": {"203.0.113.50": {"421": 310, "4xx": 310}},
        "skipped": 2,  # the record without a source, the broken one
        "server": {"address": SERVER, **_occupancy(server_sessions, start=NOW - WINDOW, end=NOW)},
        **_occupancy(sessions, start=NOW - WINDOW, end=NOW),
    }
    return data, answer


def _occupancy(sessions: list[tuple[float, float | None]], *, start: float, end: float) -> dict:
    """Sessions in the window, those open at `end`, and the most at once in [start, end]."""
    changes: dict[float, int] = {}
    counted = current = 0
    for begin, finish in sessions:
        if finish is not None and finish < start:
            continue
        counted += 1
        moment = max(begin, start)
        changes[moment] = changes.get(moment, 0) + 1
        if finish is None:
            current += 1
        else:
            changes[finish] = changes.get(finish, 0) - 1
    level = peak = 0
    for moment in sorted(changes):
        level += changes[moment]
        peak = max(peak, level)
    return {"sessions": counted, "current_sessions": current, "peak_sessions": peak}


def write(directory: Path) -> dict:
    """Write the scenario into `directory`; returns its answer."""
    directory.mkdir(parents=True, exist_ok=True)
    data, answer = scenario()
    (directory / "gateway.jsonl").write_bytes(data)
    (directory / "answer.json").write_text(json.dumps(answer, indent=1, sort_keys=True) + "\n")
    return answer


if __name__ == "__main__":
    write(Path(sys.argv[1] if len(sys.argv) > 1 else "tests/data/formats/jsonl"))
