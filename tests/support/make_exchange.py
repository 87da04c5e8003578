"""Exchange SMTP protocol logs for tests, and the Exchange scenario with its known answer.

    log = ExchangeLog()
    log.session("192.0.2.7", start=NOW - 120, duration=40)      # + ... -
    log.session("192.0.2.8", start=NOW - 30, duration=None)     # still open
    data = log.data()                                           # header + lines, CRLF

Lines are written the way Exchange writes them (CSV, quoted where a field holds a comma or a
quote, CRLF), after the header every file begins with. Run as a script to write the scenario:

    python tests/support/make_exchange.py tests/data/formats/exchange

It writes two hourly Receive logs (a session runs on from one into the next), a Send log of
the gateway's sessions to an internal server, a risk file, and `answer.json`: the sources the
default rules select, and the occupancy now and at its peak, worked out from the sessions the
script made (not by reading the logs back).
"""

from __future__ import annotations

import csv
import io
import json
import random
import sys
from datetime import UTC, datetime
from pathlib import Path

RECEIVE = "SMTP Receive Protocol Log"
SEND = "SMTP Send Protocol Log"
FIELDS = (
    "date-time,connector-id,session-id,sequence-number,local-endpoint,remote-endpoint,event,"
    "data,context"
)
BANNER = "220 {server}.campus.example Microsoft ESMTP MAIL Service ready at {date}"


def iso(when: float) -> str:
    """Exchange's date-time: UTC, milliseconds, Z."""
    moment = datetime.fromtimestamp(when, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def endpoint(address: str, port: int) -> str:
    """An endpoint as .NET writes it: 192.0.2.1:25, [2001:db8::1]:25."""
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


class ExchangeLog:
    """The lines of one Exchange protocol log file, sorted by time, after its header."""

    def __init__(self, *, server: str = "EXCH01", connector: str | None = None,
                 local: str = "198.51.100.1:25", log_type: str = RECEIVE,
                 header: bool = True) -> None:  # fmt: skip
        self.server = server
        self.connector = connector or f"{server}\\Default Frontend {server}"
        self.local = local
        self.log_type = log_type
        self.header = header
        self._lines: list[tuple[float, int, str]] = []
        self._sequence: dict[str, int] = {}
        self._next_id = 0x08DE000000000000 + sum(server.encode()) * 0x100000000

    def new_id(self) -> str:
        self._next_id += 1
        return f"{self._next_id:016X}"

    def header_lines(self, when: float) -> list[str]:
        return [
            "#Software: Microsoft Exchange Server",
            "#Version: 15.2.1118.7",
            f"#Log-type: {self.log_type}",
            f"#Date: {iso(when)}",
            f"#Fields: {FIELDS}",
        ]

    def line(self, when: float, session_id: str, remote: str, event: str, data: str = "",
             context: str = "") -> ExchangeLog:  # fmt: skip
        """One event line; the sequence number counts per session."""
        sequence = self._sequence.get(session_id, 0)
        self._sequence[session_id] = sequence + 1
        row = [iso(when), self.connector, session_id, str(sequence), self.local, remote, event,
               data, context]  # fmt: skip
        out = io.StringIO()
        csv.writer(out, lineterminator="").writerow(row)
        return self.raw(when, out.getvalue())

    def raw(self, when: float, text: str) -> ExchangeLog:
        """A line exactly as given, placed at `when`."""
        self._lines.append((when, len(self._lines), text))
        return self

    def session(self, source: str, *, start: float, duration: float | None, port: int = 50000,
                replies: tuple[str, ...] = (), session_id: str | None = None,
                mail: bool = True) -> str:  # fmt: skip
        """A whole Receive session: connect, banner, a mail (or the `replies` given, the
        gateway's answers), and the disconnect at `start + duration`; `None` leaves it open.
        Returns its session id."""
        session_id = session_id or self.new_id()
        remote = endpoint(source, port)
        banner = BANNER.format(server=self.server, date="Thu, 3 Dec 2026 10:00:00 +0000")
        self.line(start, session_id, remote, "+")
        self.line(start, session_id, remote, ">", banner)
        if replies:
            for reply in replies:
                self.line(start, session_id, remote, ">", reply)
        elif mail:
            step = (duration or 4.0) / 4
            self.line(start + step, session_id, remote, "<", f"EHLO [{source}]")
            self.line(start + step, session_id, remote, "<", "MAIL FROM:<a@example.net>")
            self.line(start + 2 * step, session_id, remote, "<", "RCPT TO:<b@campus.example>")
            self.line(start + 3 * step, session_id, remote, ">",
                      '250 2.6.0 <m1@example.net> [InternalId=1, Hostname=EXCH01] Queued mail '
                      'for delivery "ok"')  # fmt: skip
        if duration is not None:
            self.line(start + duration, session_id, remote, "-", "", "Local")
        return session_id

    def text(self, *, newline: str = "\r\n") -> str:
        lines = [text for _, _, text in sorted(self._lines)]
        first = min((when for when, _, _ in self._lines), default=0.0)
        head = self.header_lines(first) if self.header else []
        return "".join(line + newline for line in head + lines)

    def data(self, *, newline: str = "\r\n") -> bytes:
        return self.text(newline=newline).encode()


# The scenario: a check at NOW, the default 30-minute window, hourly logs 09:xx and 10:xx.
NOW = datetime(2026, 12, 3, 10, 10, 0, tzinfo=UTC).timestamp()
HOUR = datetime(2026, 12, 3, 10, 0, 0, tzinfo=UTC).timestamp()
WINDOW = 1800.0
CAPACITY = 12  # 3 sessions open now: 25%, above the 20% trigger, below the 40% alert
SERVER = "192.0.2.225"  # an internal mail server behind the gateway


def scenario(seed: int = 5) -> tuple[dict[str, ExchangeLog], dict]:
    """The scenario's files by name, and its answer."""
    rng = random.Random(seed)
    sessions: list[tuple[float, float | None]] = []  # (start, end) of every Receive session
    before = ExchangeLog()
    after = ExchangeLog()
    before._next_id = after._next_id  # one server: one sequence of session ids

    def place(source: str, start: float, duration: float | None, **kind) -> str:
        log = before if start < HOUR else after
        end = None if duration is None else start + duration
        if end is None or end < HOUR or start >= HOUR:
            session_id = log.session(source, start=start, duration=duration, **kind)
        else:  # runs from the 09:xx file into the 10:xx file
            session_id = before.session(source, start=start, duration=None, **kind)
            after._sequence[session_id] = before._sequence[session_id]
            after.line(end, session_id, endpoint(source, kind.get("port", 50000)), "-", "",
                       "Local")  # fmt: skip
        sessions.append((start, end))
        return session_id

    # Ordinary senders, one or two mails each, 2 to 14 s.
    for index in range(30):
        source = f"198.51.100.{100 + index}"
        for _ in range(rng.randint(1, 2)):
            place(source, NOW - rng.uniform(60, 3000), rng.uniform(2, 14), port=40000 + index)
    place("2001:db8::25", NOW - 700, 30, port=41000)
    place("2001:db8::25", NOW - 400, 30, port=41001)
    # cond3: 310 sessions in 10 minutes, each refused with 421 after its banner.
    refused = ("421 4.3.2 The maximum number of concurrent connections has exceeded a limit, "
               "closing transmission channel",)  # fmt: skip
    for index in range(310):
        place("203.0.113.50", NOW - 900 + index * 2, 1.0, replies=refused, port=20000 + index)
    # cond1 (with its risk): 45 sessions of 25 s, one every 20 s.
    for index in range(45):
        place("203.0.113.9", NOW - 1500 + index * 20, 25, port=30000 + index)
    # cond2 (with its risk): a slow post from 09:58, still open now, across the roll.
    slow = place("198.51.100.23", HOUR - 120, None, mail=False, port=33333)
    after._sequence[slow] = before._sequence[slow]
    after.line(HOUR + 200, slow, endpoint("198.51.100.23", 33333), "<", "MAIL FROM:<x@example.org>")
    # A session that began at 09:59:50 and ended after the roll.
    place("192.0.2.44", HOUR - 10, 30, port=44444)
    # Two ordinary sessions still open.
    place("192.0.2.45", NOW - 5, None, mail=False, port=45000)
    place("192.0.2.46", NOW - 3, None, mail=False, port=46000)

    send = ExchangeLog(connector="Inbound to campus", local="198.51.100.1:0", log_type=SEND)
    for index in range(12):
        start = NOW - 1000 + index * 60
        session_id = send.new_id()
        remote = endpoint(SERVER, 25)
        send.line(start, session_id, remote, "+")
        send.line(start, session_id, remote, "<", "421 4.3.2 Service not available")
        send.line(start + 1, session_id, remote, "-", "", "Local")
    for start in (NOW - 20, NOW - 10):  # two deliveries still under way
        session_id = send.new_id()
        send.line(start, session_id, endpoint(SERVER, 25), "+")
        send.line(start, session_id, endpoint(SERVER, 25), "<", "220 campus mail ready")

    files = {"RECV2026120309-1.LOG": before, "RECV2026120310-1.LOG": after}
    answer = {
        "now": datetime.fromtimestamp(NOW, tz=UTC).isoformat(),
        "capacity": CAPACITY,
        "candidates_with_risk_file": {
            "203.0.113.50": "cond3",
            "203.0.113.9": "cond1",
            "198.51.100.23": "cond2",
        },
        "candidates_from_log": {"203.0.113.50": "cond3"},
        "replies": {"203.0.113.50": {"421": 310, "4xx": 310}},
        "server_replies": {SERVER: {"421": 12, "4xx": 12}},
        "server": {"address": SERVER, "sessions": 14, "current_sessions": 2, "peak_sessions": 2},
        **_occupancy(sessions, start=NOW - WINDOW, end=NOW),
    }
    return {**files, "SEND2026120310-1.LOG": send}, answer


def _occupancy(sessions: list[tuple[float, float | None]], *, start: float, end: float) -> dict:
    """Sessions open at `end`, and the most at once in [start, end]: a session counts from
    its start (or `start`) up to its end; changes at one moment apply together."""
    changes: dict[float, int] = {}
    current = 0
    for begin, finish in sessions:
        if finish is not None and finish < start:
            continue
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
    return {"current_sessions": current, "peak_sessions": peak}


def write(directory: Path) -> dict:
    """Write the scenario into `directory`; returns its answer."""
    directory.mkdir(parents=True, exist_ok=True)
    files, answer = scenario()
    for name, log in files.items():
        (directory / name).write_bytes(log.data())
    (directory / "risk.csv").write_text("ip,risk\n203.0.113.9,96\n198.51.100.23,97\n")
    (directory / "answer.json").write_text(json.dumps(answer, indent=1, sort_keys=True) + "\n")
    return answer


if __name__ == "__main__":
    write(Path(sys.argv[1] if len(sys.argv) > 1 else "tests/data/formats/exchange"))
